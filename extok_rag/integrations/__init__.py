"""Framework integrations, one thin module per framework (only that module imports it; the Ray
engine lives in `extok_rag.indexing.ray_engine`, which `ray_index` re-exports)."""
