pub mod extract;
pub mod kind;
