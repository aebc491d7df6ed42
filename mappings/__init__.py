"""Legacy response shapes, one TOML file per dialect (installed as gateway.mappings)."""
