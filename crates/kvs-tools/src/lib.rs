// SPDX-License-Identifier: MPL-2.0
//! What the tools share: how their command lines are read and checked
//! before any network call, and how a usage mistake or an element's error
//! is said. The tools themselves are the binaries.

pub mod checks;
pub mod cli;
pub mod failure;
