"""The REAL ur_rtde 1.6.5 client (rtde_receive, rtde_control, dashboard_client) against the UR emulator.

Each test starts the emulator in its own process on a free 127.0.77.x address and runs the client scenario in
another spawned process with a hard timeout (ur_rtde holds the GIL while blocked and its handshake reads have
no timeout). Timing assertions are loose on purpose: the machine is shared.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pixelvla_ros import ur5e
from pixelvla_ros.ur_emulator import EmulatorProcess, free_loopback_host
from pixelvla_ros.ur_emulator.testing import DashboardHooks, run_in_process

pytest.importorskip("rtde_control")

HOME_POSE = None


def _wait(pred, timeout=3.0, dt=0.01):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(dt)
    return pred()


def _stream_servo(c, target, seconds, stop_on_false=False):
    """servoL at 500 Hz for ``seconds``; returns the list of return values."""
    results = []
    for _ in range(int(seconds * 500)):
        t0 = c.initPeriod()
        ok = c.servoL(list(target), 0.5, 0.5, 0.002, 0.1, 300)
        results.append(ok)
        c.waitPeriod(t0)
        if stop_on_false and not ok:
            break
    return results


@pytest.fixture
def emu():
    with EmulatorProcess(host=free_loopback_host(), version="5.11.1") as e:
        yield e


# ------------------------------------------------------------------------------------------------------------
def _sc_receive_and_dashboard(host):
    import dashboard_client
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    pose = r.getActualTCPPose()
    q = r.getActualQ()
    out = {
        "pose": pose,
        "q": q,
        "mode": r.getRobotMode(),
        "safety": r.getSafetyMode(),
        "runtime": r.getRuntimeState(),
        "pstop": r.isProtectiveStopped(),
    }
    d = dashboard_client.DashboardClient(host)
    d.connect()
    out["polyscope"] = d.polyscopeVersion()
    out["serial"] = d.getSerialNumber()
    out["robotmode"] = d.robotmode()
    out["safetystatus"] = d.safetystatus()
    out["remote"] = d.isInRemoteControl()
    out["model"] = d.getRobotModel()
    out["program_state"] = d.programState()
    out["running"] = d.running()
    d.loadURP("demo.urp")
    out["loaded"] = d.getLoadedProgram()
    out["saved"] = d.isProgramSaved()
    d.closePopup()
    d.closeSafetyPopup()
    d.powerOff()
    out["mode_off"] = _wait(lambda: r.getRobotMode() == 3) and r.getRobotMode()
    d.powerOn()
    d.brakeRelease()
    out["mode_on"] = _wait(lambda: r.getRobotMode() == 7) and r.getRobotMode()
    d.disconnect()
    r.disconnect()
    return out


def test_receive_and_dashboard(emu):
    out = run_in_process(_sc_receive_and_dashboard, emu.host, timeout=60)
    expected = ur5e.fk(ur5e.Q_HOME)
    np.testing.assert_allclose(out["pose"][:3], expected[:3, 3], atol=1e-5)
    np.testing.assert_allclose(out["q"], ur5e.Q_HOME, atol=1e-9)
    assert (out["mode"], out["safety"], out["runtime"], out["pstop"]) == (7, 1, 1, False)
    assert "5.11.1" in out["polyscope"] and out["serial"].isdigit()
    assert "RUNNING" in out["robotmode"] and "NORMAL" in out["safetystatus"]
    assert out["remote"] is True and out["model"] == "UR5"
    assert "demo.urp" in out["loaded"] and out["saved"] is True
    assert out["mode_off"] == 3 and out["mode_on"] == 7
    dash = [r["command"] for r in emu.commands(kind="dashboard")]
    assert "power off" in dash and "brake release" in dash


# ------------------------------------------------------------------------------------------------------------
def _sc_servo_and_moves(host):
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    out = {"running": c.isProgramRunning()}
    p0 = r.getActualTCPPose()
    target = list(p0)
    target[0] += 0.03
    target[2] += 0.05
    res = _stream_servo(c, target, 1.0)
    out["servo_all_true"] = all(res)
    out["after_servo"] = r.getActualTCPPose()
    out["servo_stop"] = c.servoStop()
    out["moveL"] = c.moveL(p0, 0.25, 1.2)
    out["after_moveL"] = r.getActualTCPPose()
    q1 = list(ur5e.Q_HOME)
    q1[0] += 0.2
    out["moveJ"] = c.moveJ(q1, 1.0, 2.0)
    out["after_moveJ_q"] = r.getActualQ()
    out["fk"] = c.getForwardKinematics()
    out["fk_q"] = c.getForwardKinematics(list(ur5e.Q_HOME))
    out["ik"] = c.getInverseKinematics(p0)
    out["setTcp"] = c.setTcp([0, 0, 0.1, 0, 0, 0])
    out["tcp_offset"] = c.getTCPOffset()
    out["pose_with_tcp"] = r.getActualTCPPose()
    out["steady"] = c.isSteady()
    out["joints_ok"] = c.isJointsWithinSafetyLimits(list(ur5e.Q_HOME))
    out["stopScript"] = c.stopScript()
    out["running_after"] = c.isProgramRunning()
    c.disconnect()
    r.disconnect()
    return out


def test_servo_moves_and_getters(emu):
    out = run_in_process(_sc_servo_and_moves, emu.host, timeout=90)
    p0 = ur5e.fk(ur5e.Q_HOME)[:3, 3]
    assert out["running"] and out["servo_all_true"]
    np.testing.assert_allclose(out["after_servo"][:3], p0 + [0.03, 0, 0.05], atol=0.005)
    assert out["servo_stop"] and out["moveL"]
    np.testing.assert_allclose(out["after_moveL"][:3], p0, atol=1e-3)
    assert out["moveJ"]
    np.testing.assert_allclose(out["after_moveJ_q"][0], ur5e.Q_HOME[0] + 0.2, atol=1e-3)
    fk_home = ur5e.fk(ur5e.Q_HOME)[:3, 3]
    np.testing.assert_allclose(out["fk_q"][:3], fk_home, atol=1e-6)
    assert np.linalg.norm(np.array(out["fk"][:3]) - fk_home) > 0.05  # moved by moveJ
    np.testing.assert_allclose(ur5e.fk(np.array(out["ik"]))[:3, 3], p0, atol=1e-3)
    assert out["setTcp"] and out["tcp_offset"] == pytest.approx([0, 0, 0.1, 0, 0, 0])
    assert out["steady"] and out["joints_ok"]
    assert not out["running_after"]
    names = [c["name"] for c in emu.commands(kind="command")]
    assert names.count("servoL") > 200
    for n in ("servoStop", "moveL", "moveJ", "setTcp", "stopScript"):
        assert n in names


# ------------------------------------------------------------------------------------------------------------
def _sc_speedl_watchdog(host):
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    out = {"wd": c.setWatchdog(20.0)}
    z0 = r.getActualTCPPose()[2]
    out["speedL"] = c.speedL([0, 0, 0.05, 0, 0, 0], 0.5, 0.0)
    # A kick writes 0 to the command register: give the controller a few cycles to see the speedL first
    # (the same race exists on a real robot), then the twist persists while only kicks arrive.
    time.sleep(0.02)
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:  # kick at 100 Hz
        c.kickWatchdog()
        time.sleep(0.01)
    out["dz_kicked"] = r.getActualTCPPose()[2] - z0
    out["running_kicked"] = c.isProgramRunning()
    # Now stall: no kicks for 0.5 s (> 1/20 Hz) -> watchdog trips, program stops, arm stops.
    time.sleep(0.5)
    out["running_stalled"] = c.isProgramRunning()
    time.sleep(1.0)
    z1 = r.getActualTCPPose()[2]
    time.sleep(0.3)
    out["drift_after_trip"] = abs(r.getActualTCPPose()[2] - z1)
    out["speed_after_trip"] = max(abs(v) for v in r.getActualTCPSpeed())
    out["speedL_after_trip"] = c.speedL([0, 0, 0.05, 0, 0, 0], 0.5, 0.0)
    out["reupload"] = c.reuploadScript() and _wait(c.isProgramRunning)
    out["speedL_after_reupload"] = c.speedL([0, 0, -0.02, 0, 0, 0], 0.5, 0.0)
    time.sleep(0.2)
    out["speedStop"] = c.speedStop(2.0)
    c.stopScript()
    c.disconnect()
    r.disconnect()
    return out


def test_speedl_kick_and_watchdog_trip(emu):
    out = run_in_process(_sc_speedl_watchdog, emu.host, timeout=60)
    assert out["wd"] and out["speedL"] and out["running_kicked"]
    assert 0.02 < out["dz_kicked"] < 0.06
    assert not out["running_stalled"]
    assert out["drift_after_trip"] < 1e-4 and out["speed_after_trip"] < 1e-3
    assert out["speedL_after_trip"] is False
    assert out["reupload"] and out["speedL_after_reupload"] and out["speedStop"]
    assert any("watchdog" in rec["message"] and "tripped" in rec["message"] for rec in emu.logs("ERROR"))


# ------------------------------------------------------------------------------------------------------------
def _sc_protective_stop(host):
    import dashboard_client
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    hooks = DashboardHooks(host)
    p0 = r.getActualTCPPose()
    target = list(p0)
    target[2] += 0.1
    _stream_servo(c, target, 0.2)
    hooks.call("protective_stop", reason="test")
    res = _stream_servo(c, target, 0.5, stop_on_false=True)
    out = {
        "servo_false": res[-1] is False,
        "pstopped": r.isProtectiveStopped(),
        "safety_mode": r.getSafetyMode(),
    }
    z1 = r.getActualTCPPose()[2]
    time.sleep(0.5)
    out["still"] = abs(r.getActualTCPPose()[2] - z1)
    out["servo_while_stopped"] = c.servoL(target, 0.5, 0.5, 0.002, 0.1, 300)
    d = dashboard_client.DashboardClient(host)
    d.connect()
    d.unlockProtectiveStop()
    out["pstopped_after_unlock"] = not _wait(lambda: not r.isProtectiveStopped())
    out["reupload"] = c.reuploadScript() and _wait(c.isProgramRunning)
    res = _stream_servo(c, target, 0.5)
    out["servo_after"] = all(res)
    out["moved_after"] = r.getActualTCPPose()[2] - z1
    c.servoStop()
    c.stopScript()
    d.disconnect()
    hooks.close()
    c.disconnect()
    r.disconnect()
    return out


def test_protective_stop_and_recovery(emu):
    out = run_in_process(_sc_protective_stop, emu.host, timeout=60)
    assert out["servo_false"] and out["pstopped"] and out["safety_mode"] == 3
    assert out["still"] < 1e-5 and out["servo_while_stopped"] is False
    assert not out["pstopped_after_unlock"]
    assert out["reupload"] and out["servo_after"] and out["moved_after"] > 0.005


# ------------------------------------------------------------------------------------------------------------
def _sc_emergency_stop(host):
    import dashboard_client
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    hooks = DashboardHooks(host)
    p0 = r.getActualTCPPose()
    c.speedL([0.05, 0, 0, 0, 0, 0], 0.5, 0.0)
    time.sleep(0.2)
    hooks.call("emergency_stop")
    out = {"estopped": _wait(r.isEmergencyStopped)}
    # each interface has its own stream: the control interface may see the stop a package later
    out["running"] = not _wait(lambda: not c.isProgramRunning())
    out["speedL"] = c.speedL([0.05, 0, 0, 0, 0, 0], 0.5, 0.0)
    out["mode"] = r.getRobotMode() if _wait(lambda: r.getRobotMode() == 3) else r.getRobotMode()
    x1 = r.getActualTCPPose()[0]
    time.sleep(0.3)
    out["still"] = abs(r.getActualTCPPose()[0] - x1)
    out["moved_before"] = x1 - p0[0]
    d = dashboard_client.DashboardClient(host)
    d.connect()
    d.powerOn()
    out["mode_power_on_during_estop"] = r.getRobotMode()
    hooks.call("release_emergency_stop")
    d.powerOn()
    d.brakeRelease()
    _wait(lambda: r.getRobotMode() == 7)
    out["reupload"] = c.reuploadScript() and _wait(c.isProgramRunning)
    out["moveL"] = c.moveL(p0, 0.25, 1.2)
    c.stopScript()
    d.disconnect()
    hooks.close()
    c.disconnect()
    r.disconnect()
    return out


def test_emergency_stop(emu):
    out = run_in_process(_sc_emergency_stop, emu.host, timeout=60)
    assert out["estopped"] and out["speedL"] is False and not out["running"] and out["mode"] == 3
    assert out["moved_before"] > 0.001 and out["still"] < 1e-5
    assert out["mode_power_on_during_estop"] == 3
    assert out["reupload"] and out["moveL"]


# ------------------------------------------------------------------------------------------------------------
def _sc_connect_servo(host, seconds=0.3):
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    p0 = r.getActualTCPPose()
    target = list(p0)
    target[1] += 0.02
    res = _stream_servo(c, target, seconds)
    out = {"ok": all(res), "dy": r.getActualTCPPose()[1] - p0[1], "serial": None}
    c.servoStop()
    c.disconnect()
    r.disconnect()
    return out


def _sc_reconnect(host, control_pipe_host):
    """Connect, let the parent restart the emulator (signalled over a file), reconnect and servo again."""
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    hooks = DashboardHooks(host)
    hooks.call("restart_controller", downtime_s=1.0)
    hooks.close()
    time.sleep(0.3)
    out = {"connected_during": r.isConnected()}
    time.sleep(1.5)
    t0 = time.monotonic()
    ok_r = False
    while not ok_r and time.monotonic() - t0 < 10:
        try:
            ok_r = r.reconnect()
        except RuntimeError:
            time.sleep(0.2)
    out["reconnect_r"] = ok_r
    out["reconnect_c"] = c.reconnect()
    out["running"] = c.isProgramRunning()
    p0 = r.getActualTCPPose()
    target = list(p0)
    target[2] += 0.02
    out["servo"] = all(_stream_servo(c, target, 0.5))
    out["dz"] = r.getActualTCPPose()[2] - p0[2]
    c.servoStop()
    c.stopScript()
    c.disconnect()
    r.disconnect()
    return out


def test_reconnect_after_controller_restart(emu):
    out = run_in_process(_sc_reconnect, emu.host, None, timeout=90)
    assert out["reconnect_r"] and out["reconnect_c"] and out["running"]
    assert out["servo"] and out["dz"] > 0.005


def test_new_clients_after_emulator_process_restart():
    host = free_loopback_host()
    with EmulatorProcess(host=host) as e1:
        out1 = run_in_process(_sc_connect_servo, e1.host, timeout=60)
    with EmulatorProcess(host=host) as e2:
        out2 = run_in_process(_sc_connect_servo, e2.host, timeout=60)
    assert out1["ok"] and out2["ok"] and out1["dy"] > 0.005 and out2["dy"] > 0.005


# ------------------------------------------------------------------------------------------------------------
def _sc_rate(host, seconds=1.0):
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    stamps = set()
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        stamps.add(r.getTimestamp())
        time.sleep(0.0005)
    r.disconnect()
    s = sorted(stamps)
    return {"n": len(s), "step": float(np.median(np.diff(s))), "span": s[-1] - s[0]}


def _sc_cb3_control(host):
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    p0 = r.getActualTCPPose()
    target = list(p0)
    target[2] -= 0.02
    ok = c.moveL(target, 0.25, 1.2)
    dz = r.getActualTCPPose()[2] - p0[2]
    c.stopScript()
    c.disconnect()
    r.disconnect()
    return {"ok": ok, "dz": dz}


def test_cb3_streams_at_125hz():
    with EmulatorProcess(host=free_loopback_host(), version="3.15.7") as e:
        rate = run_in_process(_sc_rate, e.host, timeout=30)
        ctl = run_in_process(_sc_cb3_control, e.host, timeout=60)
        conns = e.state()["control_hz"]
    assert conns == 125.0
    assert rate["step"] == pytest.approx(0.008, abs=1e-6)
    assert 60 <= rate["n"] <= 135  # ~125 distinct timestamps per second (loose: shared CPU)
    assert ctl["ok"] and ctl["dz"] == pytest.approx(-0.02, abs=1e-3)


def test_eseries_streams_at_500hz(emu):
    rate = run_in_process(_sc_rate, emu.host, timeout=30)
    assert rate["step"] == pytest.approx(0.002, abs=1e-6)
    assert rate["n"] >= 200  # ~500 distinct timestamps per second, loose for a shared machine


# ------------------------------------------------------------------------------------------------------------
def _sc_upper_range(host):
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host, use_upper_range_registers=True)
    flags = (
        rtde_control.RTDEControlInterface.FLAG_UPLOAD_SCRIPT
        | rtde_control.RTDEControlInterface.FLAG_UPPER_RANGE_REGISTERS
    )
    c = rtde_control.RTDEControlInterface(host, -1.0, flags)
    hooks = DashboardHooks(host)
    st = hooks.call("state")
    p0 = r.getActualTCPPose()
    target = list(p0)
    target[2] += 0.02
    res = _stream_servo(c, target, 0.5)
    out = {
        "offset": st["register_offset"],
        "servo": all(res),
        "dz": r.getActualTCPPose()[2] - p0[2],
        "servoStop": c.servoStop(),
        "wd": c.setWatchdog(10.0),
    }
    out["stop"] = c.stopScript()
    hooks.close()
    c.disconnect()
    r.disconnect()
    return out


def test_upper_range_registers(emu):
    out = run_in_process(_sc_upper_range, emu.host, timeout=60)
    assert out["offset"] == 24 and out["servo"] and out["dz"] > 0.005
    assert out["servoStop"] and out["wd"]
    cmds = emu.commands(kind="command", name="servoL")
    assert cmds


# ------------------------------------------------------------------------------------------------------------
def _sc_unsupported_and_in_use(host):
    import rtde_control

    c = rtde_control.RTDEControlInterface(host)
    out = {}
    try:
        rtde_control.RTDEControlInterface(host)
        out["second"] = "connected"
    except RuntimeError as e:
        out["second"] = str(e)
    out["running_before"] = c.isProgramRunning()
    out["moveUntilContact"] = c.moveUntilContact([0, 0, -0.01, 0, 0, 0])
    out["running_after"] = c.isProgramRunning()
    c.disconnect()
    return out


def test_unsupported_command_and_second_control_client(emu):
    out = run_in_process(_sc_unsupported_and_in_use, emu.host, timeout=60)
    assert "in use" in out["second"].lower()
    assert out["running_before"] and out["moveUntilContact"] is False and not out["running_after"]
    logs = " ".join(r["message"] for r in emu.logs("WARNING"))
    assert "IN_USE" in logs and "not emulated" in logs


# ------------------------------------------------------------------------------------------------------------
def _sc_safety_limits(host):
    """Servo targets beyond the safety limits protective-stop the arm; targets within them do not."""
    import rtde_control
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    c = rtde_control.RTDEControlInterface(host)
    hooks = DashboardHooks(host)
    out = {}

    def violate(name, send):
        before = r.getActualTCPPose()
        send()
        out[name] = _wait(r.isProtectiveStopped, 1.0)
        out[name + "_moved"] = max(abs(a - b) for a, b in zip(r.getActualTCPPose(), before, strict=True))
        hooks.send("unlock protective stop")
        # With the script stopped this returns False but clears the command register: else the new script
        # would replay the stopped servo command (as the real script would) and stop again.
        c.servoStop()
        out[name + "_recovered"] = c.reuploadScript() and _wait(c.isProgramRunning)

    p0 = r.getActualTCPPose()
    up = list(p0)
    up[2] += 0.1  # tracked with a 0.1 s time constant: 1 m/s at the TCP, over the 0.5 m/s limit set below
    violate("tcp", lambda: c.servoL(up, 0.5, 0.5, 0.002, 0.1, 300))
    elbow = r.getActualQ()
    elbow[2] = 3.3  # the elbow's range is +-pi
    violate("joint_limit", lambda: c.servoJ(elbow, 0.5, 0.5, 0.002, 0.1, 300))
    wrist = r.getActualQ()
    wrist[5] += (
        0.5  # 5 rad/s for the 0.1 s time constant (limit 3.33); the TCP on the wrist axis barely moves
    )
    violate("joint_speed", lambda: c.servoJ(wrist, 0.5, 0.5, 0.002, 0.1, 300))
    near = r.getActualTCPPose()
    near[2] += 0.02  # 0.2 m/s: within the limits
    out["within"] = all(_stream_servo(c, near, 0.3)) and not r.isProtectiveStopped()
    out["within_dz"] = r.getActualTCPPose()[2] - p0[2]
    c.servoStop()
    c.stopScript()
    hooks.close()
    c.disconnect()
    r.disconnect()
    return out


def test_servo_targets_beyond_the_safety_limits_protective_stop():
    with EmulatorProcess(host=free_loopback_host(), tcp_speed_limit=0.5) as e:
        out = run_in_process(_sc_safety_limits, e.host, timeout=60)
        stops = [r["message"] for r in e.logs("WARNING") if r["message"].startswith("PROTECTIVE STOP")]
    for name in ("tcp", "joint_limit", "joint_speed"):
        assert out[name] and out[name + "_moved"] < 1e-3 and out[name + "_recovered"], (name, out)
    assert out["within"] and out["within_dz"] > 0.015
    assert len(stops) == 3, stops
    assert "servoL target needs TCP speed" in stops[0] and "> limit 0.5" in stops[0]
    assert "servoJ target" in stops[1] and "outside the joint limits" in stops[1]
    assert "servoJ target needs joint speed" in stops[2]
