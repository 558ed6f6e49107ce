//! Integration tests: the real `sluice` binary on temporary projects, real
//! files and real databases. One test binary (each extra one is another link).

/// Runs each named test function once per backend, as `NAME::BACKEND` tests:
/// `per_backend!([sqlite => Sqlite, postgres => Postgres] f, g)`.
macro_rules! per_backend {
    ($backends:tt $($name:ident),* $(,)?) => {
        $( per_backend!(@one $name $backends); )*
    };
    (@one $name:ident [$($b:ident => $k:ident),*]) => {
        mod $name {
            $(
                #[test]
                fn $b() {
                    super::$name(crate::db::Kind::$k)
                }
            )*
        }
    };
}

/// Runs each named test function against both S3 servers, as `NAME::s3s_fs`
/// and `NAME::moto`.
macro_rules! per_s3 {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn s3s_fs() {
                    super::$name(super::Server::S3sFs)
                }
                #[test]
                fn moto() {
                    super::$name(super::Server::Moto)
                }
            }
        )*
    };
}

mod api;
mod bad_input;
mod check;
mod connect;
mod dashboard;
mod db;
mod db_source;
mod dbt;
mod dbt_build;
mod dbt_docs;
mod dbt_extras;
mod deploy;
mod docs;
mod examples;
mod exit_codes;
mod files;
mod http_source;
mod landing;
mod load;
mod orchestrate;
mod pools;
mod processes;
mod run;
mod s3;
mod s3_source;
mod secrets;
mod serve;
mod state;
mod support;
mod tls;
mod transform;
