# The parts of a scenario file that the VM tests need beyond what the harness exports
# (lib/scenario.nix): the broken state to build (`[sim]`), the checks that must fail
# and how (`[[expect.fail]]`), the GPU model and the spec file name. Builtins only.
# These keys are the harness's own; it validates them (`cdi-harness scenario check`),
# so only their defaults are repeated here (scenario::RawSim, RawExpect, RawGpus).
path:
let
  raw = fromTOML (builtins.readFile path);
  sim = raw.sim or { };
  expect = raw.expect or { };
in
{
  # "generated" (the generator ran) or "missing" (it did not write the spec).
  simSpec = sim.spec or "generated";
  # File name of a stale hand-made second spec beside the generated one, or null.
  staleSpec = sim.stale-spec or null;
  # A known regression built into the generated spec (lib/sim.nix `spec`'s `fault`):
  # "missing-mount-host-path", "failing-hook", or null.
  fault = sim.fault or null;
  specFile = expect.spec-file or "nvidia-container-toolkit.json";
  gpuModel = raw.gpus.model or "NVIDIA H100 80GB HBM3";
  # The checks the scenario declares must fail; `cdi-harness report judge` applies the
  # declarations themselves (the test script only needs to know whether there are any).
  expectedFailures = map (f: f.check) (expect.fail or [ ]);
}
