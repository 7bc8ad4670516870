-- posts: one row per post of a feed dump, keeping the post's position on the page.
-- ${db} is a checked identifier; :dt is a bound parameter.
INSERT OVERWRITE TABLE ${db}.posts PARTITION (dt)
SELECT f.feed_id, CAST(p.pos AS INT) AS pos, p.post AS text, f.dt
FROM ${db}.raw_feeds f
LATERAL VIEW posexplode(f.posts) p AS pos, post
WHERE f.dt = :dt
