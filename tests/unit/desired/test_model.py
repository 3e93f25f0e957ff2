"""The desired values: a workload's spec kept packed reads back as it was resolved."""

from __future__ import annotations

from typing import Any

from reconciler.desired.model import PACK_FROM, DesiredWorkload, digest


def _workload(spec: dict[str, Any]) -> DesiredWorkload:
    return DesiredWorkload(
        name="web",
        file="apps/web/score.yaml",
        spec=spec,
        resources={"db": "postgres.default#web.db"},
        depends_on=("postgres.default#web.db",),
        spec_hash=digest(spec),
        sources=("apps/web/score.yaml",),
    )


def _spec(content: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "web"},
        "containers": {
            "z-last": {"image": "nginx", "args": ["-g", "daemon off;"]},
            "a-first": {"image": "api", "variables": {"B": "2", "A": "1"}, "port": 8080},
        },
        "files": {"/etc/app.conf": {"content": content, "noExpand": True, "ratio": 0.5}},
    }


def test_a_spec_reads_back_equal_and_in_its_order() -> None:
    for content in ("short", "x" * (PACK_FROM * 4)):
        spec = _spec(content)
        read = _workload(spec).spec
        assert read == spec
        assert list(read["containers"]) == ["z-last", "a-first"]
        assert list(read["containers"]["a-first"]["variables"]) == ["B", "A"]


def test_a_long_spec_is_kept_deflated() -> None:
    workload = _workload(_spec("line of text\n" * 200))
    assert isinstance(workload.packed_spec, bytes)
    assert len(workload.packed_spec) < 600


def test_each_read_is_a_copy_its_reader_may_change() -> None:
    workload = _workload(_spec("short"))
    workload.spec["containers"].clear()
    assert workload.spec == _spec("short")


def test_workloads_compare_by_content() -> None:
    assert _workload(_spec("a")) == _workload(_spec("a"))
    assert _workload(_spec("a")) != _workload(_spec("b"))
    assert _workload(_spec("a")).to_data()["spec"] == _spec("a")


def test_a_workload_record_takes_the_spec_its_caller_decoded() -> None:
    """A workload step decodes the spec for its request; the record takes that copy rather
    than decoding it again, and is the record made from the workload alone."""
    from reconciler.pipeline import workload_record  # noqa: PLC0415 - pipeline imports this

    wl = _workload(_spec("x" * (PACK_FROM + 10)))
    decoded = wl.spec
    given = workload_record(wl, "c" * 40, {}, "Unpublished", spec=decoded)
    assert given.spec is decoded
    assert given == workload_record(wl, "c" * 40, {}, "Unpublished")


def test_equal_values_have_one_digest_object() -> None:
    """Digests are kept per workload and resource by the desired state, the diff's memo and
    the store's records: equal values give the same object, not equal copies."""
    first = digest({"b": [1, 2], "a": "x"})
    second = digest({"a": "x", "b": [1, 2]})
    assert first == second
    assert first is second
    assert digest({}) is digest({})


def test_texts_are_spelled_as_json_dumps_spells_them() -> None:
    """The encoders made once write what ``json.dumps`` with the same options writes: the
    digests are compared with those the store recorded before."""
    import json  # noqa: PLC0415

    from reconciler.desired.model import canonical_json, unpacked  # noqa: PLC0415

    for value in (_spec("é ✓ \u2028 <&>"), {"b": [1.5, None, True], "a": {"z": 1, "y": {}}}, []):
        assert canonical_json(value) == json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        packed_text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        assert unpacked(_workload(value).packed_spec) == json.loads(packed_text)


def test_a_long_spec_deflates_as_small_as_with_zlibs_defaults() -> None:
    """Packing with smaller tables keeps what a spec costs to keep: within 2 % of level 1
    with zlib's default tables."""
    import json  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    for lines in (30, 200, 2000):
        spec = _spec("".join(f"line {i} of text: ${{metadata.name}}\n" for i in range(lines)))
        kept = _workload(spec).packed_spec
        assert isinstance(kept, bytes)
        text = json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode()
        assert zlib.decompress(kept) == text
        assert len(kept) <= len(zlib.compress(text, 1)) * 1.02


def test_the_digest_of_no_params_is_that_of_its_text() -> None:
    """Most resources have no params: their digest is made once, and is the one their
    canonical text gives (the store compares it with the digests it recorded)."""
    import hashlib  # noqa: PLC0415

    expected = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    assert digest({}) == expected
    assert digest({}) is digest({})
    assert digest([]) == "sha256:" + hashlib.sha256(b"[]").hexdigest()
