//! Agent mode: the policy acts inside a sandboxed copy of the task's repository through tools
//! (`view`, `search`, `list`, `run`, `edit`, `submit`) called as JSON inside `<tool_call>` tags.
//! Everything public is in `tools`; the call parser (`call`) is re-exported there.

mod call;
mod support;
pub mod tools;
