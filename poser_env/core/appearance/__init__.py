"""SceneSim's visual vocabulary: how any noun is drawn (:mod:`.glyphs`) and how colours, patterns, styles and
backgrounds look (:mod:`.palette`). Shared by SceneSim's renderer and its pixel critic; never a scene graph."""
