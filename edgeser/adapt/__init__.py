"""Adaptation to unlabelled target audio: model, training, teachers, fusion, MI-Fuse (needs the [adapt] extra for torch parts)."""
