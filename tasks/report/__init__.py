"""The security report: one self-contained HTML page per training run (`page`), its
charts drawn as inline SVG (`svg`)."""
