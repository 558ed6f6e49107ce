//! A project folder read into memory: `sluice.toml`, `pipelines/*.toml` and
//! `models/**/*.sql`, each kept with its text for error reports. Reading never
//! touches data or servers; `validate` checks the references between files.

pub mod config;
pub mod dbt;
pub mod http;
pub mod meta;
pub mod serve;
pub mod tree;
pub mod yaml;

use std::path::{Path, PathBuf};

use crate::error::{Diagnostic, Error, Result, Severity};
use crate::secret::{Env, Secret};
pub use config::*;
pub use http::{HttpAuth, HttpSource, Incremental, Paging};
pub use meta::{
    Meta, ModelMeta, ON_SCHEMA_CHANGE, ON_SCHEMA_CHANGE_NAMES, OnSchemaChange, TestKind, TestSeverity, TestSpec,
};
pub use serve::{ChartConfig, ChartKind, RouteConfig, RouteTarget, Scope, ServeConfig};
use tree::{Cx, FileId, SourceFile, Sources};

/// A SQL file of the project: a model, a snapshot, a singular test or macros.
#[derive(Debug, Clone)]
pub struct Model {
    /// The file name without `.sql`; unique among its kind.
    pub name: String,
    pub file: FileId,
}

/// A seed: a small CSV file loaded as a table of the same name.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    /// The file, relative to the project folder.
    pub path: PathBuf,
}

/// A project read from its folder.
#[derive(Debug, Clone)]
pub struct Project {
    /// The folder as the user named it.
    pub dir: PathBuf,
    pub sources: Sources,
    pub config: ProjectConfig,
    pub pipelines: Vec<PipelineConfig>,
    pub models: Vec<Model>,
    /// `snapshots/*.sql`.
    pub snapshots: Vec<Model>,
    /// `tests/*.sql`: queries that return the failing rows.
    pub singular_tests: Vec<Model>,
    /// `macros/*.sql`: Jinja macros every model can call.
    pub macros: Vec<Model>,
    pub seeds: Vec<Seed>,
    /// What `models/**/*.toml` declare.
    pub meta: Meta,
    pub env: Env,
    /// The profile target, when the folder is a dbt project (`dbt_project.yml`).
    pub dbt: Option<dbt::DbtTarget>,
    /// A dbt project's `on-run-start`/`on-run-end`.
    pub run_hooks: dbt::RunHooks,
    /// A dbt project's models, seeds and snapshots by name: the schema and
    /// alias their configs give (validation turns them into relation names).
    pub dbt_naming: std::collections::BTreeMap<String, dbt::NodeNaming>,
    /// Every problem found, errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

impl Project {
    /// Reads every file of the project, collecting problems without stopping.
    pub fn read(dir: &Path) -> Result<Project> {
        Self::read_with(dir, &dbt::DbtOptions::default())
    }

    /// Like `read`, with what the command line says about a dbt project
    /// (profiles folder, target, vars). A folder with `sluice.toml` is a
    /// Sluice project even when it also has `dbt_project.yml`.
    pub fn read_with(dir: &Path, opts: &dbt::DbtOptions) -> Result<Project> {
        if !dir.is_dir() {
            return Err(Error::user(format!(
                "project folder {} does not exist (create one with `sluice init {}`)",
                dir.display(),
                dir.display()
            )));
        }
        let main = dir.join(PROJECT_FILE);
        if !main.is_file() {
            if dir.join(dbt::DBT_PROJECT_FILE).is_file() {
                return read_dbt(dir, opts);
            }
            return Err(Error::user(format!(
                "{} has no {PROJECT_FILE}: not a sluice project, nor a dbt one (no {}) (pass the project folder with -p DIR, or create one with `sluice init DIR`)",
                display_dir(dir),
                dbt::DBT_PROJECT_FILE
            )));
        }
        let env = Env::load(dir).map_err(Error::user)?;
        let mut sources = Sources::default();
        let mut diagnostics = Vec::new();

        let main_id = read_file(&mut sources, dir, Path::new(PROJECT_FILE))?;
        let config = {
            let src = sources.get(main_id);
            let mut cx = Cx::new(main_id, src).with_env(&env);
            let cfg = match tree::parse(src) {
                Ok(root) => config::decode_project(&root, &mut cx),
                Err(d) => {
                    cx.diags.extend(d);
                    empty_project(main_id)
                }
            };
            diagnostics.extend(cx.diags);
            cfg
        };

        if dir.join(dbt::DBT_PROJECT_FILE).is_file() {
            let mut d = Diagnostic::new(
                display_path(dir, dbt::DBT_PROJECT_FILE),
                0,
                0,
                format!("not read: {PROJECT_FILE} is in the same folder, and a folder is one project"),
            );
            d.severity = Severity::Warning;
            d.help = Some(format!("to run the dbt project, give it a folder without {PROJECT_FILE}"));
            diagnostics.push(d);
        }
        let mut pipelines = Vec::new();
        for rel in list_files(dir, Path::new("pipelines"), "toml", false)? {
            let id = read_file(&mut sources, dir, &rel)?;
            let src = sources.get(id);
            let stem = rel.file_stem().and_then(|s| s.to_str()).unwrap_or("pipeline").to_string();
            let mut cx = Cx::new(id, src).with_env(&env);
            match tree::parse(src) {
                Ok(root) => {
                    if let Some(p) = config::decode_pipeline(&root, &mut cx, &stem) {
                        pipelines.push(p);
                    }
                }
                Err(d) => cx.diags.extend(d),
            }
            diagnostics.extend(cx.diags);
        }

        let model_dirs: Vec<PathBuf> = if config.models.paths.is_empty() {
            vec![PathBuf::from("models")]
        } else {
            config.models.paths.iter().map(|p| PathBuf::from(&p.v)).collect()
        };
        let mut models = Vec::new();
        let mut meta = Meta::default();
        for mdir in &model_dirs {
            for rel in list_files(dir, mdir, "sql", true)? {
                models.push(sql_file(&mut sources, dir, &rel)?);
            }
            for rel in list_files(dir, mdir, "toml", true)? {
                let id = read_file(&mut sources, dir, &rel)?;
                let src = sources.get(id);
                let mut cx = Cx::new(id, src).with_env(&env);
                match tree::parse(src) {
                    Ok(root) => meta::decode_meta(&root, &mut cx, &mut meta),
                    Err(d) => cx.diags.extend(d),
                }
                diagnostics.extend(cx.diags);
            }
        }
        let mut sql_files = |sub: &str, recursive: bool| -> Result<Vec<Model>> {
            list_files(dir, Path::new(sub), "sql", recursive)?
                .iter()
                .map(|rel| sql_file(&mut sources, dir, rel))
                .collect()
        };
        let snapshots = sql_files("snapshots", true)?;
        let singular_tests = sql_files("tests", true)?;
        let macros = sql_files("macros", true)?;
        let seeds = list_files(dir, Path::new("seeds"), "csv", false)?
            .into_iter()
            .map(|rel| Seed { name: rel.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string(), path: rel })
            .collect();

        Ok(Project {
            dir: dir.to_path_buf(),
            sources,
            config,
            pipelines,
            models,
            snapshots,
            singular_tests,
            macros,
            seeds,
            meta,
            env,
            dbt: None,
            run_hooks: Default::default(),
            dbt_naming: Default::default(),
            diagnostics,
        })
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// The project's name (the folder's when unnamed).
    pub fn name(&self) -> String {
        self.config.name.as_ref().map(|n| n.v.clone()).unwrap_or_else(|| {
            std::fs::canonicalize(&self.dir)
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "project".into())
        })
    }

    /// A path of the project, resolved against its folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        let p = Path::new(rel);
        if p.is_absolute() { p.to_path_buf() } else { self.dir.join(p) }
    }

    /// A project path as shown to the user.
    pub fn show_path(&self, rel: &str) -> String {
        show(&self.dir, Path::new(rel))
    }

    pub fn pipeline(&self, name: &str) -> Result<&PipelineConfig> {
        self.pipelines.iter().find(|p| p.name.v == name).ok_or_else(|| {
            let names: Vec<&str> = self.pipelines.iter().map(|p| p.name.v.as_str()).collect();
            let hint = crate::error::suggest(name, &names).unwrap_or_else(|| "the project has no pipelines".into());
            Error::user(format!("no pipeline named `{name}`: {hint}"))
        })
    }

    /// The pipeline to use when the user named none: the only one there is.
    pub fn only_pipeline(&self) -> Result<&PipelineConfig> {
        match self.pipelines.as_slice() {
            [p] => Ok(p),
            [] => Err(Error::user(format!("{} has no pipelines: add one under pipelines/", display_dir(&self.dir)))),
            many => Err(Error::user(format!(
                "the project has {} pipelines; name the one to use: {}",
                many.len(),
                many.iter().map(|p| p.name.v.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn model_text(&self, m: &Model) -> &str {
        &self.sources.get(m.file).text
    }

    pub fn model_path(&self, m: &Model) -> &str {
        &self.sources.get(m.file).name
    }

    /// The name of the connection used when a step names none.
    pub fn default_connection(&self) -> String {
        if let Some(c) = &self.config.defaults.connection {
            return c.v.clone();
        }
        self.config.connections.first().map(|c| c.name.v.clone()).unwrap_or_else(|| DEFAULT_CONNECTION.to_string())
    }

    /// The names of all connections, the implicit default included.
    pub fn connection_names(&self) -> Vec<&str> {
        if self.config.connections.is_empty() {
            vec![DEFAULT_CONNECTION]
        } else {
            self.config.connections.iter().map(|c| c.name.v.as_str()).collect()
        }
    }

    /// The resolved URL of a connection (`None`: the default one).
    pub fn connection_url(&self, name: Option<&str>) -> Result<Secret> {
        let name = name.map(str::to_string).unwrap_or_else(|| self.default_connection());
        if self.config.connections.is_empty() && name == DEFAULT_CONNECTION {
            return Ok(Secret::plain(DEFAULT_WAREHOUSE_URL));
        }
        let c = self
            .config
            .connections
            .iter()
            .find(|c| c.name.v == name)
            .ok_or_else(|| Error::user(format!("no connection named `{name}` in {PROJECT_FILE}")))?;
        Secret::new(&c.url.v, &self.env)
            .map_err(|e| Error::user(format!("connection `{name}` ({}): {e}", self.sources.position(&c.url.loc))))
    }

    /// The object store URL.
    pub fn storage_url(&self) -> Result<String> {
        Ok(self.config.storage.url.as_ref().map(|u| u.v.clone()).unwrap_or_else(|| DEFAULT_STORAGE_URL.to_string()))
    }

    /// The state store's URL: `SLUICE_STATE_URL`, else `[state] url`, else
    /// `.sluice/state.db` in the project folder.
    pub fn state_url(&self) -> Result<Secret> {
        if let Some(u) = self.env.var("SLUICE_STATE_URL").filter(|u| !u.is_empty()) {
            return self.state_url_given(&u);
        }
        match &self.config.state.url {
            None => Ok(Secret::plain(DEFAULT_STATE_URL)),
            Some(u) => Secret::new(&u.v, &self.env)
                .map_err(|e| Error::user(format!("[state] url ({}): {e}", self.sources.position(&u.loc)))),
        }
    }

    /// A state store URL given outside sluice.toml (`--state`,
    /// `SLUICE_STATE_URL`): its `${env:…}` references are resolved as in
    /// sluice.toml, so a deployment can keep the password in a secret file
    /// (`postgres://app:${env:PG_PASSWORD}@db/x` with `PG_PASSWORD_FILE`).
    pub fn state_url_given(&self, url: &str) -> Result<Secret> {
        if crate::secret::has_refs(url) {
            Secret::new(url, &self.env).map_err(|e| Error::user(format!("the state store URL: {e}")))
        } else {
            Ok(Secret::plain(url))
        }
    }

    /// The IANA time zone of the project (UTC unless set).
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.config.defaults.timezone.as_ref().and_then(|t| t.v.parse().ok()).unwrap_or(chrono_tz::UTC)
    }
}

fn empty_project(file: FileId) -> ProjectConfig {
    ProjectConfig {
        file,
        name: None,
        description: None,
        connections: Vec::new(),
        storage: StorageConfig::default(),
        defaults: Defaults::default(),
        vars: serde_json::Map::new(),
        models: ModelsConfig::default(),
        state: StateConfig::default(),
        serve: Default::default(),
    }
}

/// The folder in a project (or the current folder) where Sluice keeps its
/// own files: the default warehouse, state store and lake.
pub const OWN_FOLDER: &str = ".sluice";

/// Makes sure the folder of a SQLite file at `path` exists before it is
/// opened (SQLite would create the file, but not its folder): the project's
/// own folder (`.sluice/` under `base`) is created when missing; any other
/// missing folder is a mistake in the URL (`sqlite://nodir/x.db`), and an
/// error rather than a new, empty database somewhere unexpected.
pub fn sqlite_folder(path: &Path, base: &Path, url: &str) -> Result<()> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else { return Ok(()) };
    if parent.is_dir() {
        return Ok(());
    }
    if parent == base.join(OWN_FOLDER) {
        return std::fs::create_dir_all(parent).map_err(|e| Error::io("create folder", parent, e));
    }
    Err(Error::user(format!(
        "cannot open {url}: the folder {} does not exist; check the path (only the project's own {OWN_FOLDER} folder is created)",
        parent.display()
    )))
}

/// The folder as shown in messages (`.` for the current one).
pub fn display_dir(dir: &Path) -> String {
    let s = dir.display().to_string();
    if s.is_empty() { ".".into() } else { s }
}

/// `dir/rel` as the user would type it from where they are.
pub fn show(dir: &Path, rel: &Path) -> String {
    if rel.is_absolute() || dir.as_os_str().is_empty() || dir == Path::new(".") {
        rel.display().to_string()
    } else {
        dir.join(rel).display().to_string()
    }
}

fn sql_file(sources: &mut Sources, dir: &Path, rel: &Path) -> Result<Model> {
    let file = read_file(sources, dir, rel)?;
    let name = rel.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
    Ok(Model { name, file })
}

fn read_file(sources: &mut Sources, dir: &Path, rel: &Path) -> Result<FileId> {
    let path = dir.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::user(format!("{}: not valid UTF-8 (at byte {})", show(dir, rel), e.utf8_error().valid_up_to()))
    })?;
    Ok(sources.add(SourceFile::new(show(dir, rel), path, text)))
}

/// Files with extension `ext` under `dir/sub`, sorted, as paths relative to `dir`.
fn list_files(dir: &Path, sub: &Path, ext: &str, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![sub.to_path_buf()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let rd = match std::fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list", &abs, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("list", &abs, e))?;
            let name = entry.file_name();
            let name_s = name.to_string_lossy();
            if name_s.starts_with('.') {
                continue;
            }
            let child = rel.join(&name);
            let ft = entry.file_type().map_err(|e| Error::io("stat", &entry.path(), e))?;
            if ft.is_dir() {
                if recursive {
                    stack.push(child);
                }
            } else if Path::new(&name).extension().is_some_and(|e| e == ext) {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn display_path(dir: &Path, file: &str) -> String {
    show(dir, Path::new(file))
}

/// Reads a dbt project folder into a [`Project`] (see [`dbt`]).
fn read_dbt(dir: &Path, opts: &dbt::DbtOptions) -> Result<Project> {
    let env = Env::load(dir).map_err(Error::user)?;
    let mut sources = Sources::default();
    let mut diagnostics = Vec::new();
    let main_id = read_file(&mut sources, dir, Path::new(dbt::DBT_PROJECT_FILE))?;
    let dbtp = {
        let src = sources.get(main_id);
        let mut cx = Cx::new(main_id, src);
        let p = match yaml::parse(src) {
            Ok(root) => dbt::decode_project(&root, &mut cx),
            Err(d) => {
                cx.diags.extend(d);
                dbt::DbtProject::default()
            }
        };
        diagnostics.extend(cx.diags);
        p
    };
    // Packages come from the network: refused, naming the file.
    for f in ["packages.yml", "dependencies.yml"] {
        if dir.join(f).is_file() {
            let id = read_file(&mut sources, dir, Path::new(f))?;
            let src = sources.get(id);
            if let Ok(root) = yaml::parse(src)
                && let Some(n) = root.get("packages")
                && matches!(&n.v, tree::V::Array(a) if !a.is_empty())
            {
                let mut d = src
                    .diag(n.span.clone(), "dbt packages are not supported: sluice installs nothing from the network");
                d.help = Some("copy the macros the project uses into its macros folder, or remove the packages".into());
                diagnostics.push(d);
            }
        }
    }
    let mut config = empty_project(main_id);
    config.name = dbtp.name.clone();
    config.models.materialized = Materialized::View;
    config.models.paths = dbtp
        .model_paths
        .iter()
        .map(|p| tree::Spanned { v: p.clone(), loc: tree::Loc { file: main_id, start: 0, end: 0 } })
        .collect();
    config.vars = dbtp.vars.clone();
    if let Some(v) = &opts.vars {
        match dbt::parse_vars(v) {
            Ok(m) => config.vars.extend(m),
            Err(e) => return Err(Error::user(format!("--vars: {e}"))),
        }
    }

    // profiles.yml: the target becomes the one connection.
    let mut target = None;
    let profile_name = dbtp.profile.as_ref().map(|p| p.v.clone()).or_else(|| dbtp.name.as_ref().map(|n| n.v.clone()));
    match dbt::find_profiles(dir, opts, &env) {
        Some(path) if path.is_file() => {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
            let shown = if path.parent() == Some(dir) {
                display_path(dir, dbt::PROFILES_FILE)
            } else {
                path.display().to_string()
            };
            let id = sources.add(SourceFile::new(shown, path.clone(), text));
            let src = sources.get(id);
            let mut cx = Cx::new(id, src);
            match yaml::parse(src) {
                Ok(root) => {
                    if let Some((url, t)) = dbt::decode_profiles(
                        &root,
                        &mut cx,
                        &env,
                        profile_name.as_deref().unwrap_or(""),
                        opts.target.as_deref(),
                    ) {
                        config.connections.push(ConnectionConfig {
                            name: tree::Spanned { v: t.name.clone(), loc: url.loc.clone() },
                            url,
                        });
                        config.models.threads = t.threads;
                        target = Some(t);
                    }
                }
                Err(d) => cx.diags.extend(d),
            }
            diagnostics.extend(cx.diags);
        }
        other => {
            let looked = match other {
                Some(p) => p.display().to_string(),
                None => format!("{}, the current folder and ~/.dbt", display_path(dir, dbt::PROFILES_FILE)),
            };
            diagnostics.push(
                Diagnostic::new(
                    display_path(dir, dbt::DBT_PROJECT_FILE),
                    0,
                    0,
                    format!("no {} found (looked in {looked})", dbt::PROFILES_FILE),
                )
                .with_help("pass --profiles-dir DIR or set DBT_PROFILES_DIR"),
            );
        }
    }

    // Schema files under the model, seed and snapshot paths.
    let mut yml = dbt::YmlMeta::default();
    let mut yml_dirs: Vec<&String> = dbtp.model_paths.iter().collect();
    yml_dirs.extend(&dbtp.seed_paths);
    yml_dirs.extend(&dbtp.snapshot_paths);
    // Their `{{ doc('name') }}` calls read the `{% docs %}` blocks of the
    // .md files there (and under the macro paths), so those come first.
    let mut doc_dirs = yml_dirs.clone();
    doc_dirs.extend(&dbtp.macro_paths);
    doc_dirs.sort();
    doc_dirs.dedup();
    let mut doc_at: std::collections::BTreeMap<String, String> = Default::default();
    for ddir in doc_dirs {
        for rel in list_files(dir, Path::new(ddir), "md", true)? {
            let id = read_file(&mut sources, dir, &rel)?;
            let src = sources.get(id);
            match dbt::doc_blocks(&src.text) {
                Ok(blocks) => {
                    for b in blocks {
                        if let Some(first) = doc_at.get(&b.name) {
                            let mut d = src.diag(b.at.clone(), format!("doc `{}` is defined twice", b.name));
                            d.help = Some(format!("the first is in {first}; give each doc block its own name"));
                            diagnostics.push(d);
                            continue;
                        }
                        doc_at.insert(b.name.clone(), src.name.clone());
                        yml.docs.insert(b.name, b.text);
                    }
                }
                Err((span, msg)) => diagnostics.push(src.diag(span, msg)),
            }
        }
    }
    for ydir in yml_dirs {
        for ext in ["yml", "yaml"] {
            for rel in list_files(dir, Path::new(ydir), ext, true)? {
                let id = read_file(&mut sources, dir, &rel)?;
                let src = sources.get(id);
                let mut cx = Cx::new(id, src);
                match yaml::parse(src) {
                    Ok(root) => dbt::decode_yml(&root, &mut cx, &mut yml),
                    Err(d) => cx.diags.extend(d),
                }
                diagnostics.extend(cx.diags);
            }
        }
    }
    let mut meta = Meta { sources: std::mem::take(&mut yml.sources), docs: yml.docs.clone(), ..Meta::default() };
    if let Some(t) = &target {
        for s in &mut meta.sources {
            if let Some(schema) = &s.schema {
                match dbt::render_value(schema, t, &env) {
                    Ok(v) => s.schema = Some(v),
                    Err(e) => diagnostics.push(sources.diag(&s.name.loc, format!("source `{}`: schema {e}", s.name.v))),
                }
            }
        }
    }
    let merge = dbt::Merge { dbt: &dbtp, yml };
    let mut used = Vec::new();
    let project_name = dbtp.name.as_ref().map(|n| n.v.clone()).unwrap_or_default();
    let mut dbt_naming = std::collections::BTreeMap::new();

    let mut models = Vec::new();
    let mut disabled: Vec<String> = Vec::new();
    for mdir in &dbtp.model_paths {
        for rel in list_files(dir, Path::new(mdir), "py", true)? {
            diagnostics.push(
                Diagnostic::new(show(dir, &rel), 0, 0, "Python models are not supported: sluice runs SQL models")
                    .with_help("rewrite it as a .sql model, or run it with a `command` step"),
            );
        }
        for rel in list_files(dir, Path::new(mdir), "sql", true)? {
            let m = sql_file(&mut sources, dir, &rel)?;
            let (ym, cfg) = merge.model(&m.name, &rel, &mut used);
            if cfg.enabled == Some(false) {
                disabled.push(m.name);
                continue;
            }
            let loc = tree::Loc { file: m.file, start: 0, end: 0 };
            dbt_naming.insert(m.name.clone(), dbt::NodeNaming::new(&project_name, &cfg, &rel, &dbtp.model_paths));
            meta.models.push(dbt::model_meta(&m.name, loc, ym, &cfg));
            models.push(m);
        }
    }
    // Schema-file models with no file are reported by validation; disabled ones are not.
    for (m, cfg) in &merge.yml.models {
        if !models.iter().any(|x: &Model| x.name == m.name.v)
            && !disabled.contains(&m.name.v)
            && cfg.enabled != Some(false)
        {
            meta.models.push(m.clone());
        }
    }
    let sql_files = |sources: &mut Sources, subs: &[String], recursive: bool| -> Result<Vec<(PathBuf, Model)>> {
        let mut out = Vec::new();
        for sub in subs {
            for rel in list_files(dir, Path::new(sub), "sql", recursive)? {
                let m = sql_file(sources, dir, &rel)?;
                out.push((rel, m));
            }
        }
        Ok(out)
    };
    let mut snapshots = Vec::new();
    for (rel, mut m) in sql_files(&mut sources, &dbtp.snapshot_paths, true)? {
        let text = sources.get(m.file).text.clone();
        match dbt::snapshot_block(&text) {
            Some((name, blanked)) => {
                m.name = name;
                let f = &mut sources.files[m.file.0 as usize];
                *f = SourceFile::new(f.name.clone(), f.path.clone(), blanked);
            }
            None if text.contains("{% snapshot") || text.contains("{%- snapshot") => {
                diagnostics.push(Diagnostic::new(
                    show(dir, &rel),
                    0,
                    0,
                    "a {% snapshot %} block without {% endsnapshot %}",
                ));
            }
            None => {}
        }
        let cfg = merge.snapshot(&m.name, &rel, &mut used);
        if cfg.enabled != Some(false) {
            // Its schema file's columns and tests, run after it as a model's are.
            if let Some(y) = merge.yml.described.iter().find(|y| y.name.v == m.name) {
                meta.models.push(dbt::model_meta(&m.name, y.name.loc.clone(), Some(y.clone()), &cfg));
            }
            dbt_naming.insert(m.name.clone(), dbt::NodeNaming::new(&project_name, &cfg, &rel, &dbtp.snapshot_paths));
            snapshots.push(m);
        }
    }
    let mut singular_tests = Vec::new();
    for (rel, m) in sql_files(&mut sources, &dbtp.test_paths, true)? {
        let text = &sources.get(m.file).text;
        if text.contains("{% test ") || text.contains("{%- test ") {
            diagnostics.push(
                Diagnostic::new(
                    show(dir, &rel),
                    0,
                    0,
                    "custom generic tests ({% test %} blocks) are not supported yet",
                )
                .with_help("write the check as a singular test: a query that returns the failing rows"),
            );
            continue;
        }
        singular_tests.push(m);
    }
    let mut macros = Vec::new();
    for (rel, m) in sql_files(&mut sources, &dbtp.macro_paths, true)? {
        let text = &sources.get(m.file).text;
        for tag in ["test", "materialization"] {
            if text.contains(&format!("{{% {tag} ")) || text.contains(&format!("{{%- {tag} ")) {
                diagnostics.push(Diagnostic::new(
                    show(dir, &rel),
                    0,
                    0,
                    format!("{{% {tag} %}} blocks are not supported yet"),
                ));
            }
        }
        macros.push(m);
    }
    let mut seeds = Vec::new();
    for sdir in &dbtp.seed_paths {
        for rel in list_files(dir, Path::new(sdir), "csv", true)? {
            let name = rel.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            let cfg = merge.seed(&name, &rel, &mut used);
            if cfg.enabled == Some(false) {
                continue;
            }
            dbt_naming.insert(name.clone(), dbt::NodeNaming::new(&project_name, &cfg, &rel, &dbtp.seed_paths));
            if !cfg.column_types.is_empty() {
                let loc = tree::Loc { file: main_id, start: 0, end: 0 };
                meta.seeds.push(dbt::seed_meta(&name, loc, &cfg, &mut diagnostics, &sources));
            }
            if let Some(y) = merge.yml.described.iter().find(|y| y.name.v == name) {
                meta.models.push(dbt::model_meta(&name, y.name.loc.clone(), Some(y.clone()), &cfg));
            }
            seeds.push(Seed { name, path: rel });
        }
    }
    dbt::unused_paths(dbtp.models.as_ref(), &used, &sources, "models", &mut diagnostics);
    dbt::unused_paths(dbtp.seeds.as_ref(), &used, &sources, "seeds", &mut diagnostics);
    dbt::unused_paths(dbtp.snapshots.as_ref(), &used, &sources, "snapshots", &mut diagnostics);

    Ok(Project {
        dir: dir.to_path_buf(),
        sources,
        config,
        pipelines: Vec::new(),
        models,
        snapshots,
        singular_tests,
        macros,
        seeds,
        meta,
        env,
        dbt: target,
        run_hooks: dbtp.hooks.clone(),
        dbt_naming,
        diagnostics,
    })
}
