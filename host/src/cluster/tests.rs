//! Unit tests of the coordination state machine.
