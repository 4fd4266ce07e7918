"""pixelvla_ros: PixelVLA on robot arms.

The ROS-free core (model, preprocessing, simulator, safety, drivers' control logic) lives in this
package and never imports rclpy; the nodes under pixelvla_ros.nodes are thin adapters.
"""

# The generated messages (pixelvla_ros.msg) are installed into the install prefix's copy of this
# package, while a source checkout may come first on sys.path (e.g. `python -m pytest` from the
# repository root): merge both so that `pixelvla_ros.msg` is found either way.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
