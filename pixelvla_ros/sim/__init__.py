"""MuJoCo tabletop simulator: the robot of the development machines (demo, ROS tests, training data).

Modules: scene (MJCF authoring), controller (EE delta servo), tasks (task families, success detectors),
seeds (train/eval seed split), env (TabletopEnv), expert (scripted experts), expert_eval, record
(demonstrations + on-disk format), render (GIF + contact sheet).
"""
