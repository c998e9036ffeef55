"""Open-vocabulary 3D maps from RGB-D sequences: read a scene, fuse per-pixel features onto points,
query the map with words.

- :func:`open_scene` reads and checks a scene folder (generic, ScanNet and Replica layouts as
  exported for OpenScene, trajectory files) into one convention (camera-to-world, OpenCV axes).
- :func:`fuse` streams the frames through an :class:`~langseg.LSegPredictor` and accumulates the
  features of every point a frame sees (frustum, border margin, depth test).
- :class:`Scene` loads a written map; ``Scene.load(dir).query("chair,table,floor")`` labels its points.
"""

from .fusion import FuseConfig, FusedScene, fuse, sanity, scene_points
from .layouts import Frame, SceneError, SceneInput, open_scene
from .maps import Scene, SceneQuery, write_map
from .points import PointCloud, load_points, write_ply

__all__ = [
    "Frame",
    "FuseConfig",
    "FusedScene",
    "PointCloud",
    "Scene",
    "SceneError",
    "SceneInput",
    "SceneQuery",
    "fuse",
    "load_points",
    "open_scene",
    "sanity",
    "scene_points",
    "write_map",
    "write_ply",
]
