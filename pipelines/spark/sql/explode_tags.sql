-- article_tags: one row per (article, tag); an article without tags has no row here.
-- ${db} is a checked identifier; :dt is a bound parameter.
INSERT OVERWRITE TABLE ${db}.article_tags PARTITION (dt)
SELECT a.article_id, t.tag, a.dt
FROM ${db}.raw_articles a
LATERAL VIEW explode(a.tags) t AS tag
WHERE a.dt = :dt
