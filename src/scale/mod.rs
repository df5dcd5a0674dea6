//! Scale-out: backplane engines, each implementing the interface the core
//! defines in [`crate::core::backplane`], so that hubs in several
//! processes or hosts serve one feed (`docs/scaling.md`). Redis is the one
//! engine today; another (NATS, say) would be one more file here.

mod redis;

pub(crate) use redis::{validate, Backplane, Link};
