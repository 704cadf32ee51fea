// SPDX-License-Identifier: GPL-2.0
/*
 * cellvm_msitest: a test-only driver for cellvm's PCI test device
 * (1b36:00ce, docs/pci.md) that proves MSI-X end to end: the guest
 * programs the function's MSI-X table through the kernel's own MSI code,
 * the device model sends each vector, and cellvm's irqfd routes deliver
 * them to this handler.
 *
 * It matches no ID: it binds only where user space asks for it
 * (driver_override, then drivers_probe), so it never takes a device from
 * uio_pci_generic or anything else. Probe enables the function, allocates
 * every MSI-X vector it offers (at most MSITEST_MAX_VECTORS), requests an
 * interrupt for each, then asks the device to send each vector once
 * (BAR0 register 0x10 = vector number) and waits up to 5 s for it.
 * It logs one line, which the nested pci scenario reads from the kernel
 * log:
 *
 *   cellvm-msitest: <device> vectors=N received=R interrupts=I
 *
 * R counts the vectors whose interrupt arrived, I every interrupt taken
 * (I > R means a vector fired more than once). Probe succeeds either way;
 * unbinding frees the vectors (device-managed).
 */
#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/pci.h>

/* The test device's BAR0 register that sends MSI-X vector N on a write of N. */
#define MSITEST_REG_MSIX 0x10
#define MSITEST_MAX_VECTORS 8

struct msitest_vector {
	atomic_t count;
	struct completion arrived;
};

struct msitest {
	void __iomem *regs;
	struct msitest_vector vec[MSITEST_MAX_VECTORS];
};

static irqreturn_t msitest_irq(int irq, void *data)
{
	struct msitest_vector *v = data;

	atomic_inc(&v->count);
	complete(&v->arrived);
	return IRQ_HANDLED;
}

static int msitest_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct msitest *t;
	int nvec, i, err, received = 0, interrupts = 0;

	t = devm_kzalloc(&pdev->dev, sizeof(*t), GFP_KERNEL);
	if (!t)
		return -ENOMEM;
	err = pcim_enable_device(pdev);
	if (err)
		return err;
	/* An MSI-X message is a memory write: the function needs bus mastering. */
	pci_set_master(pdev);
	t->regs = pcim_iomap(pdev, 0, 0);
	if (!t->regs)
		return -ENOMEM;
	nvec = pci_msix_vec_count(pdev);
	if (nvec <= 0) {
		dev_info(&pdev->dev, "cellvm-msitest: %s vectors=0 received=0 interrupts=0\n",
			 pci_name(pdev));
		return 0;
	}
	nvec = min(nvec, MSITEST_MAX_VECTORS);
	nvec = pci_alloc_irq_vectors(pdev, nvec, nvec, PCI_IRQ_MSIX);
	if (nvec < 0)
		return dev_err_probe(&pdev->dev, nvec, "cellvm-msitest: no MSI-X vectors\n");
	for (i = 0; i < nvec; i++) {
		atomic_set(&t->vec[i].count, 0);
		init_completion(&t->vec[i].arrived);
		err = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, i), msitest_irq, 0,
				       "cellvm_msitest", &t->vec[i]);
		if (err)
			return dev_err_probe(&pdev->dev, err, "cellvm-msitest: vector %d\n", i);
	}
	for (i = 0; i < nvec; i++) {
		iowrite32(i, t->regs + MSITEST_REG_MSIX);
		if (wait_for_completion_timeout(&t->vec[i].arrived, 5 * HZ))
			received++;
	}
	for (i = 0; i < nvec; i++)
		interrupts += atomic_read(&t->vec[i].count);
	dev_info(&pdev->dev, "cellvm-msitest: %s vectors=%d received=%d interrupts=%d\n",
		 pci_name(pdev), nvec, received, interrupts);
	return 0;
}

static struct pci_driver msitest_driver = {
	.name = "cellvm_msitest",
	/* No id_table: bound through driver_override only. */
	.probe = msitest_probe,
};
module_pci_driver(msitest_driver);

MODULE_DESCRIPTION("cellvm test-device MSI-X check (test only)");
MODULE_LICENSE("GPL");
