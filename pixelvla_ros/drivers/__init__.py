"""Arm drivers' control logic, ROS-free: the nodes in pixelvla_ros/nodes wrap these cores."""
