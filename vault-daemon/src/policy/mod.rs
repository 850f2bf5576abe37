//! Who may do what.
mod scope;
pub use self::scope::{ADMIN_AREAS, Operation, Scope, ScopeError, Target};
