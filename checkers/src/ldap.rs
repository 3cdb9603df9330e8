//! Ldap check (not implemented yet: every attempt is down with that reason).
use crate::{Error, Target, Verdict, spec::Ldap};

#[derive(Debug)]
pub(crate) struct Prepared {}

impl Prepared {
    pub(crate) fn new(spec: &Ldap) -> Result<Prepared, Error> {
        let _ = spec;
        Ok(Prepared {})
    }
}

pub(crate) async fn probe(p: &Prepared, spec: &Ldap, t: &Target) -> Result<Verdict, Error> {
    let _ = (p, spec, t);
    Ok(Verdict::Down(
        "the ldap check is not implemented yet".into(),
    ))
}
