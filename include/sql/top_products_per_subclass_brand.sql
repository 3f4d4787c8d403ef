-- Keep the best-scored products of each subclass-brand (product fatigue: a member who likes
-- Gracia day dresses sees the ~15 most likely to sell, not all 1000 on sale).
SELECT *
FROM (
  SELECT
    p.*,
    ROW_NUMBER() OVER (PARTITION BY p.subclass_brand_id ORDER BY p.score DESC, p.style_id) AS rank_in_subclass_brand
  FROM {products} AS p
)
WHERE rank_in_subclass_brand <= {limit}
