//! Radius check (not implemented yet: every attempt is down with that reason).
use crate::{Error, Target, Verdict, spec::Radius};

#[derive(Debug)]
pub(crate) struct Prepared {}

impl Prepared {
    pub(crate) fn new(spec: &Radius) -> Result<Prepared, Error> {
        let _ = spec;
        Ok(Prepared {})
    }
}

pub(crate) async fn probe(p: &Prepared, spec: &Radius, t: &Target) -> Result<Verdict, Error> {
    let _ = (p, spec, t);
    Ok(Verdict::Down(
        "the radius check is not implemented yet".into(),
    ))
}
