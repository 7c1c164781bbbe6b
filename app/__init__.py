"""DirtyLog Inspector: the PySide6 + pyqtgraph front end over the engine."""
