"""The ROS 2 nodes: thin shells that declare parameters, convert messages (conversions.py) and own threads
and timers; the work is done by the ROS-free core (policy, chunk_timeline, safety, drivers, sim)."""
