"""The prepared-query cache is bounded by memory, not by a count of entries.

A count-bounded cache kept ~400 MB after 300 large previews (issue 10): the entries that group
by thousands of public keys are megabytes each.
"""

from __future__ import annotations

from pathlib import Path

from rds_kernel.node.prepared import PreparedCache, weight
from rds_kernel.spec import Query, count, mean
from tests.node.nodes import build_node


def test_the_cache_evicts_the_least_recently_used_beyond_its_bytes() -> None:
    cache: PreparedCache[str, int] = PreparedCache(max_bytes=100)
    for key in "abcd":
        cache.put(key, 1, 30)
    assert len(cache) == 3 and cache.bytes == 90 and cache.get("a") is None
    cache.get("b")  # now the most recent
    cache.put("e", 1, 30)
    assert cache.get("b") == 1 and cache.get("c") is None
    cache.put("huge", 1, 101)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("huge") is None and cache.bytes == 90


def test_the_node_keeps_prepared_queries_within_its_memory_setting(tmp_path: Path) -> None:
    """Many distinct large previews keep the cache within prepared_cache_mb, and a large entry
    weighs more than a small one."""
    node = build_node(tmp_path / "node", prepared_cache_mb=4)
    try:
        owner = node.service.store.get_user("alice")
        keys = {"age": list(range(500)), "sex": ["F", "M"]}
        for i in range(12):
            spec = (
                Query("patients")
                .group_by("age", "sex", keys=keys)
                .agg(count(), mean("age", bounds=(0, 100 + i)))
                .spec(0.5)
                .to_dict()
            )
            node.service.preview(owner, spec)
            assert node.service._prepared.bytes <= 4 * 1024 * 1024
        assert 0 < len(node.service._prepared) < 12
        small = Query("patients").agg(count()).spec(0.5)
        _s, _ds, prepared_small = node.service._prepared_query(small.to_dict())
        _s, _ds, prepared_large = node.service._prepared_query(spec)
        assert weight(prepared_large, len(str(spec))) > 2 * weight(prepared_small, 100)
    finally:
        node.service.close()
