# Real GPUs: the host's GPUs at `pci` are handed to the VM with VFIO, and the VM runs
# the NixOS NVIDIA driver and the real toolkit. Needs a prepared builder (README,
# "NixOS"): IOMMU on, the GPUs bound to vfio-pci, /dev/vfio in the sandbox, and the
# `gpu-passthrough` system feature, which the test derivation requires.
{ pci }:
{ config, lib, ... }:
{
  # The NVIDIA driver is unfree; this VM test is its only user here.
  nixpkgs.config.allowUnfree = true;

  services.xserver.videoDrivers = [ "nvidia" ];
  hardware.nvidia = {
    open = lib.mkDefault true;
    package = lib.mkDefault config.boot.kernelPackages.nvidiaPackages.stable;
  };

  virtualisation.memorySize = 8192;
  virtualisation.cores = lib.mkDefault 4;
  virtualisation.qemu.options = map (address: "-device vfio-pci,host=${address}") pci;
}
