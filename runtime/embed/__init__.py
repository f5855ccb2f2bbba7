"""Batch embedding of many images into resumable Parquet shards, in one process or on Ray Data."""
from .inputs import items_from_data, items_from_images, items_from_list
from .local import EmbedReport, embed, encode_shard
from .shards import Batch, Item, Plan, load_into, make_plan, read_embeddings

__all__ = ["Item", "Plan", "Batch", "EmbedReport", "make_plan", "encode_shard", "embed", "read_embeddings",
           "load_into", "items_from_images", "items_from_list", "items_from_data"]
