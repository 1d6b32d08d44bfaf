-- billing demo data: the features of the demo products used by the fixtures and the example
-- (the mirror itself is filled by Stripe's events). Idempotent.
INSERT INTO billing.plan_features (product_id, feature) VALUES
    ('prod_RlQ7ypb3n4TBpV', 'seats'),
    ('prod_RlQ7ypb3n4TBpV', 'sso'),
    ('prod_RlQ8basicTier0', 'seats')
ON CONFLICT DO NOTHING;
