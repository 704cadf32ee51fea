//! The INTx swizzle: which of a host bridge's four interrupt pins a
//! device's INTx pin reaches. It is a PCI rule, shared by the bridge's INTx
//! routing ([`PciHostBridge`](super::PciHostBridge)) and the device tree's
//! `interrupt-map` (`fdt`), so both always agree.

/// The IOAPIC pin a device's INTx line reaches: the standard swizzle
/// `(device + pin - 1) % 4` over the bridge's four pins (`pin` 1 = INTA).
/// The bus number does not enter it.
pub fn pci_intx_pin(intx: &[u32; 4], device: u32, pin: u32) -> u32 {
    intx[((device % 4 + pin.wrapping_sub(1) % 4) % 4) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTX: [u32; 4] = [10, 11, 12, 13];

    #[test]
    fn swizzle_is_device_plus_pin_minus_one_mod_four() {
        assert_eq!(pci_intx_pin(&INTX, 0, 1), 10);
        assert_eq!(pci_intx_pin(&INTX, 0, 4), 13);
        assert_eq!(pci_intx_pin(&INTX, 1, 1), 11);
        assert_eq!(pci_intx_pin(&INTX, 1, 4), 10);
        assert_eq!(pci_intx_pin(&INTX, 2, 3), 10);
        assert_eq!(pci_intx_pin(&INTX, 5, 2), 12);
        assert_eq!(pci_intx_pin(&INTX, 31, 4), 12);
        for device in 0..32u32 {
            for pin in 1..=4u32 {
                let want = INTX[((device + pin - 1) % 4) as usize];
                assert_eq!(pci_intx_pin(&INTX, device, pin), want);
            }
        }
    }

    #[test]
    fn out_of_range_pins_do_not_panic() {
        // Pin 0 ("no pin") and garbage values still index inside the array.
        for pin in [0, 5, u32::MAX] {
            for device in [0, 31, u32::MAX] {
                assert!(INTX.contains(&pci_intx_pin(&INTX, device, pin)));
            }
        }
    }
}
