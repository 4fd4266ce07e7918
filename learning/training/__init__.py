"""Visuomotor instruction tuning of PixelVLA (`ros2 run pixelvla_ros train`)."""
