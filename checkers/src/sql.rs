//! MySQL and PostgreSQL checks (not implemented yet).
use crate::{Error, Target, Verdict, spec::Sql};

#[derive(Debug)]
pub(crate) struct MysqlPrepared {}

impl MysqlPrepared {
    pub(crate) fn new(spec: &Sql) -> Result<MysqlPrepared, Error> {
        let _ = spec;
        Ok(MysqlPrepared {})
    }
}

#[derive(Debug)]
pub(crate) struct PostgresPrepared {}

impl PostgresPrepared {
    pub(crate) fn new(spec: &Sql) -> Result<PostgresPrepared, Error> {
        let _ = spec;
        Ok(PostgresPrepared {})
    }
}

pub(crate) async fn probe_mysql(
    p: &MysqlPrepared,
    spec: &Sql,
    t: &Target,
) -> Result<Verdict, Error> {
    let _ = (p, spec, t);
    Ok(Verdict::Down(
        "the mysql check is not implemented yet".into(),
    ))
}

pub(crate) async fn probe_postgres(
    p: &PostgresPrepared,
    spec: &Sql,
    t: &Target,
) -> Result<Verdict, Error> {
    let _ = (p, spec, t);
    Ok(Verdict::Down(
        "the postgres check is not implemented yet".into(),
    ))
}
