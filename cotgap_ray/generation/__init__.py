"""Stage 3, teacher generation: problems -> shards -> a Ray Data actor pool of engines -> the content-addressed,
resumable Parquet rationale cache.

    pipeline.py      the driver: plan each teacher's shards, run the pool, check and record every shard
    shard_worker.py  the Ray Data actor: one engine, one shard per call, Parquet bytes back to the driver
    placement.py     how many engines, with which CPUs/GPUs, on which node types (checked before any engine starts)
    cache.py         the cache layout: manifest, shard files, checks, resume
"""
