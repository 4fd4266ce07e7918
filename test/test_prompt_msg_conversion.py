"""prompt_from_msg refuses what VisualPrompt.msg does not define: a box is top-left then bottom-right, and
any other order of its corners is refused rather than reordered (issue 17, defect 10: any doubt means no
motion)."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from pixelvla_ros.msg import VisualPrompt as VisualPromptMsg

from pixelvla_ros.nodes.conversions import MessageError, prompt_from_msg, prompt_to_msg
from pixelvla_ros.prompts import BOX, VisualPrompt

W, H = 64, 48


def box_msg(u: list[float], v: list[float]) -> VisualPromptMsg:
    msg = VisualPromptMsg(type=VisualPromptMsg.TYPE_BOX, image_width=W, image_height=H, labels=[1])
    msg.header.stamp, msg.header.frame_id = Time(sec=5), "camera_optical_frame"
    msg.u, msg.v = u, v
    return msg


def test_a_top_left_then_bottom_right_box_is_read() -> None:
    prompt = prompt_from_msg(box_msg([10.0, 30.0], [12.0, 40.0]))
    assert prompt.kind == BOX
    np.testing.assert_array_equal(prompt.points, [[10.0, 12.0], [30.0, 40.0]])
    # what prompt_to_msg writes reads back (the core stores top-left first)
    sent = prompt_to_msg(VisualPrompt.box(30.0, 40.0, 10.0, 12.0), Time(sec=5), "camera_optical_frame", W, H)
    np.testing.assert_array_equal(prompt_from_msg(sent).points, [[10.0, 12.0], [30.0, 40.0]])


@pytest.mark.parametrize(
    "u, v",
    [
        ([30.0, 10.0], [40.0, 12.0]),  # bottom-right first
        ([30.0, 10.0], [12.0, 40.0]),  # top-right, bottom-left
        ([10.0, 30.0], [40.0, 12.0]),  # bottom-left, top-right
        ([10.0, 10.0], [12.0, 40.0]),  # no width
    ],
)
def test_box_corners_in_another_order_are_refused_naming_them(u: list[float], v: list[float]) -> None:
    with pytest.raises(MessageError, match="top-left then bottom-right") as e:
        prompt_from_msg(box_msg(u, v))
    assert f"({u[0]}, {v[0]}) then ({u[1]}, {v[1]})" in str(e.value)


def test_a_box_needs_two_corners() -> None:
    with pytest.raises(MessageError, match="exactly 2 corner"):
        prompt_from_msg(box_msg([10.0, 20.0, 30.0], [12.0, 20.0, 40.0]))
