-- The Hive tables of the cleaning stage. ${db} is substituted (a checked identifier);
-- every table is partitioned by dt so a re-run replaces exactly its partitions.
CREATE TABLE IF NOT EXISTS ${db}.raw_feeds (
  feed_id STRING, source_path STRING, banner STRING, heading STRING,
  posts ARRAY<STRING>, footer STRING, bytes BIGINT, ingest_errors ARRAY<STRING>,
  dt STRING)
USING parquet PARTITIONED BY (dt);

CREATE TABLE IF NOT EXISTS ${db}.posts (
  feed_id STRING, pos INT, text STRING,
  dt STRING)
USING parquet PARTITIONED BY (dt);

CREATE TABLE IF NOT EXISTS ${db}.clean_posts (
  doc_id STRING, text STRING, truncated BOOLEAN, lang STRING, topic STRING, length INT,
  feed_id STRING, pos INT,
  dt STRING)
USING parquet PARTITIONED BY (dt);

-- One row per JSON line of raw/articles/dt=…/*.jsonl that parsed.
CREATE TABLE IF NOT EXISTS ${db}.raw_articles (
  article_id STRING, title STRING, tags ARRAY<STRING>,
  sections ARRAY<STRUCT<heading: STRING, paragraphs: ARRAY<STRING>>>,
  source_path STRING, line INT, bytes BIGINT,
  dt STRING)
USING parquet PARTITIONED BY (dt);

CREATE TABLE IF NOT EXISTS ${db}.article_tags (
  article_id STRING, tag STRING,
  dt STRING)
USING parquet PARTITIONED BY (dt);

-- One row per paragraph; an article without sections (or a section without paragraphs)
-- keeps one row with NULLs (LATERAL VIEW OUTER), so it is still accounted for.
CREATE TABLE IF NOT EXISTS ${db}.paragraphs (
  article_id STRING, section_pos INT, heading STRING, para_pos INT, text STRING,
  dt STRING)
USING parquet PARTITIONED BY (dt);

CREATE TABLE IF NOT EXISTS ${db}.clean_paragraphs (
  doc_id STRING, text STRING, truncated BOOLEAN, lang STRING, topic STRING, length INT,
  article_id STRING, section_pos INT, heading STRING, para_pos INT,
  dt STRING)
USING parquet PARTITIONED BY (dt);

CREATE TABLE IF NOT EXISTS ${db}.quarantine (
  source STRING, locator STRING, reason STRING, bytes BIGINT,
  stage STRING, dt STRING)
USING parquet PARTITIONED BY (stage, dt);

CREATE TABLE IF NOT EXISTS ${db}.job_runs (
  run_id STRING, job STRING, rows_in BIGINT, rows_out BIGINT, quarantined BIGINT,
  duplicates_dropped BIGINT, finished_at TIMESTAMP,
  duplicates_by_kind MAP<STRING, BIGINT>,
  dt STRING)
USING parquet PARTITIONED BY (dt);

-- Dedup across dt partitions (pipelines/spark/crossday.py, documents.py). A "member" is one
-- clean_posts row: one distinct copy of a post as one dt's crawls brought it.
-- The dedup index: one row per member, what a later day's job joins against instead of
-- re-reading every text: its text hash (clean_posts.doc_id), the hashes of its first K, 2K,
-- 4K, … characters (K = prefix_key_chars; the lengths it reaches), and its MinHash band keys. Written last for a dt: a dt
-- without index rows is not (or not yet) part of the documents.
CREATE TABLE IF NOT EXISTS ${db}.dedup_index (
  member_id STRING, prefix_keys ARRAY<BIGINT>, truncated BOOLEAN, length INT, bands ARRAY<BIGINT>,
  feed_id STRING, pos INT,
  dt STRING)
USING parquet PARTITIONED BY (dt);

-- Every relation found between two members of different dts (the winner is the longer copy,
-- then the smaller member_id, the complete over the truncated, the earlier dt), partitioned by
-- the dt whose job found it. A pure function of the two texts: a re-run finds the same rows.
CREATE TABLE IF NOT EXISTS ${db}.dedup_links (
  loser_dt STRING, loser_id STRING, winner_dt STRING, winner_id STRING, kind STRING,
  similarity DOUBLE,
  found_dt STRING)
USING parquet PARTITIONED BY (found_dt);

-- The audit of one dt's own copies dropped by its clean (exact, truncation, near), each with
-- the member_id it lost to (a copy of the same dt) and the similarity.
CREATE TABLE IF NOT EXISTS ${db}.duplicates (
  feed_id STRING, pos INT, member_id STRING, kind STRING, winner_id STRING, similarity DOUBLE,
  dt STRING)
USING parquet PARTITIONED BY (dt);

-- Every member and the document it belongs to (rebuilt from dedup_index + dedup_links).
-- role: kept (the document's text) or seen (a copy of a document kept elsewhere).
CREATE TABLE IF NOT EXISTS ${db}.document_members (
  member_id STRING, doc_id STRING, role STRING, winner_dt STRING, winner_id STRING,
  kind STRING, similarity DOUBLE,
  dt STRING)
USING parquet PARTITIONED BY (dt);

-- One row per document: the identity is the first-seen copy (doc_id = its text hash), the
-- text is the longest (least truncated) copy's, from source_dt/feed_id/pos.
CREATE TABLE IF NOT EXISTS ${db}.documents (
  doc_id STRING, text STRING, truncated BOOLEAN, lang STRING, topic STRING, length INT,
  feed_id STRING, pos INT, source_dt STRING, last_seen_dt STRING, times_seen BIGINT,
  first_seen_dt STRING)
USING parquet PARTITIONED BY (first_seen_dt);
