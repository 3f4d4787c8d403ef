-- Variety limit: within one class, keep a member's top N subclass-brands by affinity, so that
-- day dresses from a fifth brand give way to heels and pumps. Rank order is kept.
SELECT a.*
FROM (
  SELECT
    x.*,
    ROW_NUMBER() OVER (
      PARTITION BY x.member_id, x.class_key
      ORDER BY x.affinity DESC, x.subclass_brand_id
    ) AS rank_in_class
  FROM {affinity} AS x
) AS a
WHERE a.rank_in_class <= {limit}
