"""docs/ros.md's node reference is what the nodes declare: regenerated from the running nodes and compared."""

from __future__ import annotations

from pixelvla_ros.nodes import reference


def test_docs_ros_md_holds_the_nodes_own_reference(ros_domain: int) -> None:
    documented = reference.generated_part(reference.DOC.read_text())
    actual = reference.generate()
    assert documented == actual, (
        "docs/ros.md is out of date: run `python -m pixelvla_ros.nodes.reference --write`"
    )
