//! Values during lowering, and lexical scopes of variable slots.
//!
//! A variable is a slot (`VarId`); scopes map names to slots. Assignment updates the slot's current
//! value, so loops and branches carry exactly the slots assigned in them, by identity even when an
//! inner `let` shadows the name.

use crate::Span;
use crate::ir::Value;
use crate::tir::Type;
use std::collections::HashMap;

pub use super::konst::{KTy, Konst};

/// What an expression lowers to.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// A tile-IR value (tile, scalar or tensor).
    V(Value),
    /// A compile-time scalar and its type (untyped: a literal that takes the type of what it
    /// meets).
    K(Konst, KTy),
    Tuple(Vec<Val>),
    List(Vec<Val>),
    /// `lo..hi` with an optional `.step_by(s)`.
    Range(Box<Val>, Box<Val>, Option<Box<Val>>),
    /// The value of a statement-like expression (`store`).
    Unit,
    /// The result of an expression that already failed and was reported.
    Poison,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VarId(pub u32);

#[derive(Clone, Debug)]
pub struct Slot {
    pub mutable: bool,
    /// The fixed type of a `mut` variable: assignments are converted to it.
    pub ty: Option<Type>,
    pub val: Val,
    pub span: Span,
}

/// Scopes of one function body (an inlined `fn` gets a fresh `Scopes`).
#[derive(Debug, Default)]
pub struct Scopes {
    pub frames: Vec<HashMap<String, VarId>>,
}

impl Scopes {
    pub fn lookup(&self, name: &str) -> Option<VarId> {
        self.frames.iter().rev().find_map(|f| f.get(name).copied())
    }

    /// Every visible name (for "did you mean").
    pub fn names(&self) -> Vec<String> {
        self.frames.iter().flat_map(|f| f.keys().cloned()).collect()
    }
}
