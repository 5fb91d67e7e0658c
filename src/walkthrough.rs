//! Waypoints: the docs' walk-throughs, kept true by tests.
//!
//! docs/ARCHITECTURE.md walks through the paths a reader most wants to follow: one line
//! from the socket to its reply, accepting a client, its close, the drain. Each function
//! a walk-through links calls [`waypoint`] first thing. In the daemon that call is
//! nothing at all (it compiles away); under `cargo test` it is recorded, and the tests in
//! `reactor::server::walkthroughs` drive each path through a real server and check that
//! every function the walk-through links ran, in the order the walk-through tells.

/// Marks the function it is called from as a step of a documented path. `name` is that
/// function's name. Costs nothing outside `cargo test`.
#[inline(always)]
#[track_caller]
pub(crate) fn waypoint(name: &'static str) {
    #[cfg(test)]
    trail::record(name, std::panic::Location::caller());
    #[cfg(not(test))]
    let _ = name;
}

/// The recorder the tests read (this thread's waypoints, while a recording runs).
#[cfg(test)]
pub(crate) mod trail {
    use std::cell::RefCell;
    use std::panic::Location;

    /// One waypoint passed: the function's name, and where the call is.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Passed {
        pub name: &'static str,
        pub file: &'static str,
        pub line: u32,
    }

    thread_local! {
        static TRAIL: RefCell<Option<Vec<Passed>>> = const { RefCell::new(None) };
    }

    pub(super) fn record(name: &'static str, at: &'static Location<'static>) {
        TRAIL.with(|t| {
            if let Some(trail) = t.borrow_mut().as_mut() {
                trail.push(Passed {
                    name,
                    file: at.file(),
                    line: at.line(),
                });
            }
        });
    }

    /// Runs `f`, and returns the waypoints it passed on this thread, in order.
    pub(crate) fn recording(f: impl FnOnce()) -> Vec<Passed> {
        TRAIL.with(|t| *t.borrow_mut() = Some(Vec::new()));
        f();
        TRAIL.with(|t| t.borrow_mut().take().unwrap_or_default())
    }
}
