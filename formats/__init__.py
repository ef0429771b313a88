"""The formats other software speaks: schema.org ClaimReview JSON-LD, W3C PROV-O, CSV — out and in."""
