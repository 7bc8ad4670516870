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
