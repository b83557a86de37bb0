//! The option definitions a NixOS module file makes, read from its syntax tree.
//!
//! NixOS configuration writes one option in many shapes: nested attribute sets
//! (`virtualisation = { docker = { enable = true; }; };`), dotted paths
//! (`virtualisation.docker.enable = true;`), mixes of both, values wrapped in
//! `lib.mkIf`/`mkForce`/`mkDefault`/`mkMerge`, modules written as functions
//! (`{ config, pkgs, ... }:`), `let … in`, `with pkgs;`, explicit `config = …` sections
//! and inline modules in `imports`. The lint rules should not care which shape a file
//! uses, so this module flattens all of them into [`Def`]s: one full option path (with
//! where each of its names is written) and the value after looking through the wrappers.
//! Nothing is evaluated: a value that needs evaluation stays an opaque expression.

use rnix::ast::{self, HasEntry};
use rnix::{SyntaxKind, TextRange};
use rowan::ast::AstNode;

/// One name of an option path and where the file writes it.
#[derive(Debug, Clone)]
pub(crate) struct Seg {
    /// The name; `None` when it is computed (`${…}`), which never matches an option.
    pub(crate) name: Option<String>,
    /// Where the name is written.
    pub(crate) range: TextRange,
}

/// One definition: an option path and a value the file gives it.
///
/// A value that is an attribute set yields a `Def` for the set itself and one for each
/// of its attributes, so both `runtimes = { nvidia = …; }` and `runtimes.nvidia = …`
/// produce a definition of `…runtimes.nvidia`.
#[derive(Debug, Clone)]
pub(crate) struct Def {
    /// The full option path, outermost name first.
    pub(crate) segs: Vec<Seg>,
    /// The value with `mkIf`/`mkForce`/… and parentheses looked through.
    pub(crate) value: ast::Expr,
}

impl Def {
    /// Whether this defines exactly `path`.
    pub(crate) fn is(&self, path: &[&str]) -> bool {
        self.segs.len() == path.len() && self.starts_with(path)
    }

    /// Whether this defines `prefix` or an option below it.
    pub(crate) fn starts_with(&self, prefix: &[&str]) -> bool {
        self.segs.len() >= prefix.len()
            && self
                .segs
                .iter()
                .zip(prefix)
                .all(|(s, p)| s.name.as_deref() == Some(*p))
    }

    /// The option path as the NixOS manual writes it (`a.b.c`); computed names show as `${…}`.
    pub(crate) fn dotted(&self, len: usize) -> String {
        self.segs
            .iter()
            .take(len)
            .map(|s| s.name.as_deref().unwrap_or("${…}"))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Where the last name of the path is written: what a finding about this option points at.
    pub(crate) fn key_range(&self) -> TextRange {
        self.segs
            .last()
            .map(|s| s.range)
            .unwrap_or_else(|| self.value.syntax().text_range())
    }
}

/// Module-system attributes that are not configuration.
const NOT_CONFIG: &[&str] = &["options", "_file", "key", "disabledModules", "_class"];

/// Every option definition the module in `root` makes, in source order of their values.
pub(crate) fn collect(root: &ast::Root) -> Vec<Def> {
    let mut out = Vec::new();
    if let Some(expr) = root.expr() {
        walk_module(expr, &mut out);
    }
    out
}

/// A module: a function returning a module, an attribute set that is the configuration
/// itself, or one with explicit `config` (and `options`) sections.
fn walk_module(expr: ast::Expr, out: &mut Vec<Def>) {
    for expr in look_through(expr, true) {
        let ast::Expr::AttrSet(set) = expr else {
            continue;
        };
        let entries: Vec<(Vec<Seg>, Option<ast::Expr>)> = set
            .attrpath_values()
            .map(|e| (attrpath_segs(e.attrpath()), e.value()))
            .collect();
        let explicit = entries.iter().any(|(segs, _)| {
            matches!(
                segs.first().and_then(|s| s.name.as_deref()),
                Some("config" | "options")
            )
        });
        for (segs, value) in entries {
            let Some(value) = value else { continue };
            let first = segs.first().and_then(|s| s.name.as_deref());
            match first {
                Some("imports") if segs.len() == 1 => {
                    for list in look_through(value, false) {
                        if let ast::Expr::List(list) = list {
                            // Inline modules; paths name other files, which are not read.
                            for item in list.items() {
                                walk_module(item, out);
                            }
                        }
                    }
                }
                Some(name) if NOT_CONFIG.contains(&name) => {}
                Some("config") if explicit => {
                    walk_value(segs.into_iter().skip(1).collect(), value, out);
                }
                _ if explicit => {}
                _ => walk_value(segs, value, out),
            }
        }
    }
}

/// Records `segs = value` and, when the value is an attribute set, every attribute in it.
fn walk_value(segs: Vec<Seg>, value: ast::Expr, out: &mut Vec<Def>) {
    for value in look_through(value, false) {
        let set = match &value {
            ast::Expr::AttrSet(set) => Some(set.clone()),
            _ => None,
        };
        if !segs.is_empty() {
            out.push(Def {
                segs: segs.clone(),
                value,
            });
        }
        if let Some(set) = set {
            for entry in set.attrpath_values() {
                let Some(inner) = entry.value() else { continue };
                let mut path = segs.clone();
                path.extend(attrpath_segs(entry.attrpath()));
                walk_value(path, inner, out);
            }
        }
    }
}

/// The names of an attribute path (`a.b."c"`), each with where it is written.
fn attrpath_segs(path: Option<ast::Attrpath>) -> Vec<Seg> {
    path.map(|p| {
        p.attrs()
            .map(|attr| Seg {
                name: attr_name(&attr),
                range: attr.syntax().text_range(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The static name of an attribute: `foo`, `"foo"` or `${"foo"}`; `None` when computed.
pub(crate) fn attr_name(attr: &ast::Attr) -> Option<String> {
    match attr {
        ast::Attr::Ident(ident) => Some(ident.syntax().text().to_string()),
        ast::Attr::Str(s) => static_str(s),
        ast::Attr::Dynamic(d) => match d.expr() {
            Some(ast::Expr::Str(s)) => static_str(&s),
            _ => None,
        },
    }
}

/// The text of a string without interpolations; `None` when it interpolates.
pub(crate) fn static_str(s: &ast::Str) -> Option<String> {
    let mut text = String::new();
    for part in s.normalized_parts() {
        match part {
            ast::InterpolPart::Literal(lit) => text.push_str(&lit),
            ast::InterpolPart::Interpolation(_) => return None,
        }
    }
    Some(text)
}

/// Whether a (looked-through) value is the literal `true`.
pub(crate) fn is_true(expr: &ast::Expr) -> bool {
    ident_is(expr, "true")
}

/// Whether a (looked-through) value is the literal `false`.
pub(crate) fn is_false(expr: &ast::Expr) -> bool {
    ident_is(expr, "false")
}

fn ident_is(expr: &ast::Expr, name: &str) -> bool {
    matches!(expr, ast::Expr::Ident(i) if i.syntax().text() == name)
}

/// The values an expression stands for once the module system's wrappers are looked
/// through: parentheses, `mkIf c v`, `mkForce v`, `mkDefault v`, `mkOverride n v`,
/// `mkOrder n v`, `mkBefore`/`mkAfter`, `optionalAttrs c v`, each item of `mkMerge [ … ]`,
/// both branches of `if … then … else …`, the bodies of `let … in`, `with …;` and
/// `assert …;`, and (for a whole module) the body of its function.
pub(crate) fn look_through(expr: ast::Expr, module: bool) -> Vec<ast::Expr> {
    let mut out = Vec::new();
    let mut todo = vec![expr];
    while let Some(expr) = todo.pop() {
        match &expr {
            ast::Expr::Paren(p) => todo.extend(p.expr()),
            ast::Expr::LetIn(l) => todo.extend(l.body()),
            ast::Expr::With(w) => todo.extend(w.body()),
            ast::Expr::Assert(a) => todo.extend(a.body()),
            ast::Expr::Lambda(l) if module => todo.extend(l.body()),
            ast::Expr::IfElse(i) => {
                // Pushed in reverse so the `then` branch comes out first.
                todo.extend(i.else_body());
                todo.extend(i.body());
            }
            ast::Expr::Apply(apply) => match unwrap_call(apply) {
                Some(Unwrapped::One(inner)) => todo.push(inner),
                Some(Unwrapped::Merge(items)) => todo.extend(items.into_iter().rev()),
                None => out.push(expr),
            },
            _ => out.push(expr),
        }
    }
    out
}

enum Unwrapped {
    One(ast::Expr),
    Merge(Vec<ast::Expr>),
}

/// The value inside a module-system wrapper call, if `apply` is one with all its arguments.
fn unwrap_call(apply: &ast::Apply) -> Option<Unwrapped> {
    let mut args = Vec::new();
    let mut head = ast::Expr::Apply(apply.clone());
    while let ast::Expr::Apply(a) = &head {
        args.push(a.argument()?);
        head = a.lambda()?;
    }
    args.reverse();
    let name = function_name(&head)?;
    let (arity, value) = match name.as_str() {
        "mkForce"
        | "mkDefault"
        | "mkOptionDefault"
        | "mkBefore"
        | "mkAfter"
        | "mkImageMediaOverride"
        | "mkVMOverride" => (1, 0),
        "mkIf" | "optionalAttrs" | "mkOverride" | "mkOrder" => (2, 1),
        "mkMerge" => {
            if args.len() != 1 {
                return None;
            }
            let items = args.pop()?;
            let mut merged = Vec::new();
            for list in look_through(items, false) {
                match list {
                    ast::Expr::List(list) => merged.extend(list.items()),
                    other => merged.push(other),
                }
            }
            return Some(Unwrapped::Merge(merged));
        }
        _ => return None,
    };
    if args.len() != arity {
        return None;
    }
    Some(Unwrapped::One(args.swap_remove(value)))
}

/// `mkIf` for `mkIf`, `lib.mkIf` and `lib.modules.mkIf`.
fn function_name(head: &ast::Expr) -> Option<String> {
    match head {
        ast::Expr::Ident(i) => Some(i.syntax().text().to_string()),
        ast::Expr::Select(s) if s.default_expr().is_none() => {
            s.attrpath()?.attrs().last().and_then(|a| attr_name(&a))
        }
        ast::Expr::Paren(p) => function_name(&p.expr()?),
        _ => None,
    }
}

/// The text of every string literal without interpolation (`"…"` or `''…''`) anywhere in
/// an expression: `[ "nvidia" ]`, `mkForce [ "nvidia" ]`, `[ "modesetting" ] ++ [ "nvidia" ]`.
pub(crate) fn string_literals(expr: &ast::Expr) -> impl Iterator<Item = String> + '_ {
    expr.syntax()
        .descendants()
        .filter(|n| n.kind() == SyntaxKind::NODE_STRING)
        .filter_map(ast::Str::cast)
        .filter_map(|s| static_str(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(src: &str) -> Vec<(String, String)> {
        let parse = rnix::Root::parse(src);
        assert!(parse.errors().is_empty(), "{:?}", parse.errors());
        collect(&parse.tree())
            .iter()
            .map(|d| (d.dotted(d.segs.len()), d.value.syntax().text().to_string()))
            .collect()
    }

    #[test]
    fn nested_dotted_and_mixed_paths_flatten_to_the_same_definition() {
        for src in [
            "{ virtualisation = { docker = { enable = true; }; }; }",
            "{ virtualisation.docker.enable = true; }",
            "{ virtualisation.docker = { enable = true; }; }",
            "{ virtualisation = { docker.enable = true; }; }",
            "{ \"virtualisation\".${\"docker\"}.enable = true; }",
        ] {
            let d = defs(src);
            assert!(
                d.contains(&("virtualisation.docker.enable".into(), "true".into())),
                "{src}: {d:?}"
            );
        }
    }

    #[test]
    fn wrappers_functions_let_with_and_explicit_config_are_looked_through() {
        let src = r#"{ config, lib, pkgs, ... }:
let cfg = config.x; in
with lib;
{
  imports = [ ./hw.nix { hardware.nvidia-container-toolkit.enable = mkDefault true; } ];
  options.x = mkOption { };
  config = mkIf cfg.enable (mkMerge [
    { virtualisation.docker.enable = lib.mkForce true; }
    (lib.mkIf true { virtualisation.docker.daemon.settings.features.cdi = false; })
  ]);
}"#;
        let d = defs(src);
        for want in [
            ("hardware.nvidia-container-toolkit.enable", "true"),
            ("virtualisation.docker.enable", "true"),
            (
                "virtualisation.docker.daemon.settings.features.cdi",
                "false",
            ),
        ] {
            assert!(
                d.contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?} not in {d:?}"
            );
        }
        // `options` is not configuration, and `imports` is not an option.
        assert!(
            d.iter()
                .all(|(p, _)| !p.starts_with("options") && !p.starts_with("imports")),
            "{d:?}"
        );
    }

    #[test]
    fn partial_wrapper_calls_stay_opaque() {
        let d = defs("{ a = lib.mkIf cond; }");
        assert_eq!(d, vec![("a".to_string(), "lib.mkIf cond".to_string())]);
    }
}
