-- paragraphs: nested LATERAL VIEWs, sections first, then each section's paragraphs.
-- OUTER keeps an article without sections (and a section without paragraphs) as one
-- row with NULLs, so the clean stage can account for it instead of losing it.
-- ${db} is a checked identifier; :dt is a bound parameter.
INSERT OVERWRITE TABLE ${db}.paragraphs PARTITION (dt)
SELECT a.article_id,
       CAST(s.section_pos AS INT) AS section_pos,
       s.section.heading AS heading,
       CAST(p.para_pos AS INT) AS para_pos,
       p.paragraph AS text,
       a.dt
FROM ${db}.raw_articles a
LATERAL VIEW OUTER posexplode(a.sections) s AS section_pos, section
LATERAL VIEW OUTER posexplode(s.section.paragraphs) p AS para_pos, paragraph
WHERE a.dt = :dt
