"""Ray Data as an indexing engine: re-exports of `extok_rag.indexing.ray_engine` (the engine
lives next to the local one; Ray itself is imported only when a run starts).

    build_index(corpus, index_dir, models, engine=RayEngine(WorkerModels(...)))
"""

from extok_rag.indexing.ray_engine import RayEngine
from extok_rag.indexing.ray_session import check_address, ray_session, require_ray
from extok_rag.indexing.ray_tasks import WorkerModels

__all__ = ["RayEngine", "WorkerModels", "check_address", "ray_session", "require_ray"]
