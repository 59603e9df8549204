// SPDX-License-Identifier: MPL-2.0
//! What the tools share: how their command lines are read and how a usage
//! mistake is said. The tools themselves are the binaries.

pub mod cli;
