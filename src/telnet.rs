//! Telnet command filtering (filled in by its issue).
