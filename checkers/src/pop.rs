//! Pop check (not implemented yet: every attempt is down with that reason).
use crate::{Error, Target, Verdict, spec::Pop};

#[derive(Debug)]
pub(crate) struct Prepared {}

impl Prepared {
    pub(crate) fn new(spec: &Pop) -> Result<Prepared, Error> {
        let _ = spec;
        Ok(Prepared {})
    }
}

pub(crate) async fn probe(p: &Prepared, spec: &Pop, t: &Target) -> Result<Verdict, Error> {
    let _ = (p, spec, t);
    Ok(Verdict::Down("the pop check is not implemented yet".into()))
}
