#![no_std]
// The program itself is the `tollgate` binary (src/main.rs); this library exists
// so the host can type-check the crate as part of the workspace.
