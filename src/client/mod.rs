//! echoc: client modes (filled in by its issue).
