// SPDX-License-Identifier: GPL-2.0
/*
 * cellvm_agent: guest agent for the cellvm paravirtual channel
 * (compatible "cellvm,channel-v1").
 *
 * The host (cellvm) sends device-tree overlays through the channel; this
 * driver applies them with of_overlay_fdt_apply() and answers with the
 * overlay id (ACK) or the kernel's error (NAK). REMOVE destroys the platform
 * devices of the nodes the overlay created, then removes the overlay.
 * Everything the agent applied is removed when the module is unloaded.
 * CONNECTORS: after an apply, every node the overlay added that is
 * compatible "cellvm,connector" (an add-on connector, a simple-bus) is
 * populated, so a later overlay's nodes under it get platform devices.
 *
 * PCI_RESCAN / PCI_REMOVE (CV_CAP_PCI_FUNCTIONS): a function the host
 * added to a running PCI host bridge is found by rescanning its bus; one
 * the host takes away is stopped and removed (its driver unbound) after
 * the consent hook let "pci:DOMAIN:BB:DD.F" go. The payload names the
 * function by PCI domain, bus and devfn.
 *
 * SHUTDOWN: the agent acknowledges and calls orderly_poweroff() (the
 * kernel runs its poweroff_cmd, /sbin/poweroff). When the host announces
 * CV_HOST_CAP_POWER_OFF, the agent registers a power-off handler that
 * sends POWER_OFF as the kernel's very last step of any poweroff, so the
 * cell ends as powered off (x86 without ACPI has no other way to say so).
 *
 * Protocol (version 1): docs/channel.md in the cellvm repository.
 *
 * Context rules: the hard IRQ handler only acknowledges the interrupt and
 * queues work; messages are copied, answered and overlays applied/removed in
 * an ordered workqueue, under agent->lock, never in IRQ context.
 *
 * CONSENT: before a device's state takes it away from the guest (an
 * overlay that sets a node's status to something other than "okay", or
 * the removal of an overlay that set a node "okay"), the agent runs the
 * program in the module parameter consent_hook (default
 * /sbin/cellvm-consent) once per node: `HOOK disable|remove NODE-PATH`.
 * The removal of an attached device (the nodes an overlay created) does
 * not ask: a detach is the host's decision, and `detach` without --force
 * already waits for the guest to let the device go. Exit status 0 lets the node go; anything
 * else refuses the whole request with NAK -EBUSY (nothing changes). No
 * program at that path means consent; an empty parameter never asks. This
 * is seed 001's "userspace arbitrates, then tells the kernel": e.g. a hook
 * that refuses while a disk of that node is mounted.
 *
 * CONSENT RESPONDER: a resident guest process may open /dev/cellvm-consent
 * (one at a time) and answer instead of the hook, without a fork and exec
 * per question. While it holds the device open, each question is read from
 * it as one line "disable|remove NODE-PATH
" (read blocks until there is
 * one; partial reads continue the same line) and answered by writing a
 * decimal status line: "0" lets the node go, any other number refuses (as
 * the hook's exit status). No answer within consent_timeout_ms, or the
 * responder closing the device before answering, refuses (EBUSY). With no
 * responder open, the hook is run as above.
 *
 * TEST HOOK: the module parameter test_mode (below) makes the agent refuse
 * or ignore the host's requests, for cellvm's rollback tests. It is 0
 * (normal) unless someone writes it; never set it outside tests.
 */

#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/moduleparam.h>
#include <linux/of.h>
#include <linux/of_fdt.h>
#include <linux/of_platform.h>
#include <linux/pci.h>
#include <linux/platform_device.h>
#include <linux/poll.h>
#include <linux/reboot.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/umh.h>
#include <linux/unaligned.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#define CV_DEVICE_MAGIC 0x48435643u /* "CVCH" */
#define CV_MSG_MAGIC 0x47534d43u /* "CMSG" */
#define CV_PROTOCOL_VERSION 1

/* Registers (32-bit, offsets from the base). */
#define CV_REG_MAGIC 0x000
#define CV_REG_VERSION 0x004
#define CV_REG_HOST_CAPS 0x008
#define CV_REG_H2G_OFFSET 0x010
#define CV_REG_H2G_SIZE 0x014
#define CV_REG_G2H_OFFSET 0x018
#define CV_REG_G2H_SIZE 0x01c
#define CV_REG_INT_STATUS 0x020
#define CV_REG_INT_ACK 0x024
#define CV_REG_INT_ENABLE 0x028
#define CV_REG_H2G_STATE 0x030
#define CV_REG_H2G_TICKET 0x034
#define CV_REG_H2G_DONE 0x038
#define CV_REG_H2G_RESULT 0x03c
#define CV_REG_G2H_DOORBELL 0x040
#define CV_REG_G2H_RESULT 0x044

#define CV_INT_H2G 0x1u

/* Operations. */
#define CV_OP_HELLO 1
#define CV_OP_APPLY_OVERLAY 2
#define CV_OP_REMOVE_OVERLAY 3
#define CV_OP_PING 4
#define CV_OP_ACK 5
#define CV_OP_NAK 6
#define CV_OP_STATUS 7
#define CV_OP_BYE 8
#define CV_OP_SHUTDOWN 9
#define CV_OP_POWER_OFF 10
#define CV_OP_PCI_RESCAN 11
#define CV_OP_PCI_REMOVE 12

/* Agent capabilities (HELLO). */
#define CV_CAP_OVERLAY 0x1u
#define CV_CAP_PING 0x2u
#define CV_CAP_SHUTDOWN 0x4u
#define CV_CAP_CONNECTORS 0x8u
#define CV_CAP_PCI_FUNCTIONS 0x10u
#define CV_CAPS_OVERLAYS (CV_CAP_OVERLAY | CV_CAP_CONNECTORS)
#define CV_AGENT_CAPS (CV_CAPS_OVERLAYS | CV_CAP_PING | CV_CAP_SHUTDOWN | CV_CAP_PCI_FUNCTIONS)

/* Host capabilities (HOST_CAPS register). */
#define CV_HOST_CAP_POWER_OFF 0x1u

struct cv_hdr {
	__le32 magic;
	__le16 version;
	__le16 op;
	__le32 seq;
	__le32 status;
	__le32 len;
	__le32 reserved;
} __packed;

#define CV_HDR_LEN sizeof(struct cv_hdr) /* 24 */

/*
 * ---- TEST HOOK: test_mode ----
 *
 * /sys/module/cellvm_agent/parameters/test_mode (writable at runtime, or
 * test_mode=N at insmod) makes this agent misbehave the ways a real agent
 * can, so that cellvm's rollback paths run against a real guest
 * (tests/nested/scenarios/rollback.sh; docs/channel.md, "Test modes"):
 *
 *   0  normal.
 *   1  nak: every APPLY_OVERLAY, REMOVE_OVERLAY and SHUTDOWN is answered
 *      NAK -EBUSY without touching the device tree or powering off (PING is
 *      answered as usual).
 *   2  silent: every host request (APPLY_OVERLAY, REMOVE_OVERLAY, PING,
 *      SHUTDOWN) is
 *      taken off the mailbox and held unanswered (up to CV_TEST_MAX_HELD;
 *      further ones are dropped). When test_mode leaves 2, the held requests
 *      are carried out in order under the new mode and answered late, as a
 *      slow agent would answer them (the host refuses such answers with
 *      -ETIMEDOUT; the agent then removes an overlay nobody owns).
 *
 * Unloading the module drops held requests unanswered; a reloaded module
 * starts in mode 0. The protocol is unchanged: a test mode only changes
 * which valid answer is sent, and when. Not for production use.
 */
enum cv_test_mode {
	CV_TEST_NORMAL = 0,
	CV_TEST_NAK = 1,
	CV_TEST_SILENT = 2,
	CV_TEST_MAX_MODE = CV_TEST_SILENT,
};

enum { CV_TEST_MAX_HELD = 8 }; /* requests test_mode 2 holds at most */

static int test_mode = CV_TEST_NORMAL;

/* A node an overlay created (its path in the live tree). */
struct cv_node {
	struct list_head list;
	char *path;
};

/*
 * A host request held unanswered in test_mode 2: header + payload. The
 * payload (an overlay FDT) must be 8-byte aligned for libfdt, like in rx.
 */
struct cv_held {
	struct list_head list;
	u32 size;
	u8 msg[] __aligned(8);
};

/* An overlay this agent applied. */
struct cv_overlay {
	struct list_head list;
	int id;
	struct list_head nodes; /* struct cv_node, in creation order */
	struct list_head enabled; /* struct cv_node: nodes it set "okay" */
};

struct cv_agent {
	struct device *dev;
	void __iomem *base;
	int irq;
	u32 h2g_off, h2g_size, g2h_off, g2h_size;
	struct workqueue_struct *wq;
	struct work_struct work;
	struct mutex lock; /* mailboxes, seq, overlays, stopping */
	struct list_head overlays; /* struct cv_overlay, in apply order */
	u32 seq;
	u32 hello_seq;
	bool stopping;
	u8 *rx; /* copy of the posted host message (h2g_size bytes) */
	struct list_head held; /* struct cv_held, test_mode 2 only */
	unsigned int n_held;
	/* PRE_APPLY notifier: records the nodes an apply of ours creates. */
	struct notifier_block nb;
	struct task_struct *capture_task;
	struct list_head *capture_list;
	/* Sends POWER_OFF at the end of a poweroff (NULL if not registered). */
	struct sys_off_handler *sys_off;
	/* ktime (ns) of the first interrupt cv_work has not served yet, or 0. */
	s64 irq_ns;
	/* From that interrupt to cv_work running (us), -1 if unknown. */
	s64 wake_us;
};

static u32 cv_read(struct cv_agent *ag, u32 reg)
{
	return readl(ag->base + reg);
}

static void cv_write(struct cv_agent *ag, u32 reg, u32 val)
{
	writel(val, ag->base + reg);
}

/*
 * Mailbox copies with 8-byte accesses where possible (each access is a VM
 * exit); mailboxes are 8-byte aligned.
 */
static void cv_copy_from(void *dst, const void __iomem *src, size_t n)
{
	u8 *d = dst;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		u64 v = __raw_readq(src + i);

		memcpy(d + i, &v, 8);
	}
	for (; i < n; i++)
		d[i] = __raw_readb(src + i);
}

static void cv_copy_to(void __iomem *dst, const void *src, size_t n)
{
	const u8 *s = src;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		u64 v;

		memcpy(&v, s + i, 8);
		__raw_writeq(v, dst + i);
	}
	for (; i < n; i++)
		__raw_writeb(s[i], dst + i);
}

/*
 * Sends one message to the host and returns G2H_RESULT: 0 accepted, or the
 * negative errno the host refused it with. Caller holds ag->lock.
 */
static int cv_send(struct cv_agent *ag, u16 op, u32 seq, int status,
		   const void *payload, u32 len)
{
	struct cv_hdr h = {
		.magic = cpu_to_le32(CV_MSG_MAGIC),
		.version = cpu_to_le16(CV_PROTOCOL_VERSION),
		.op = cpu_to_le16(op),
		.seq = cpu_to_le32(seq),
		.status = cpu_to_le32((u32)status),
		.len = cpu_to_le32(len),
	};
	void __iomem *mb = ag->base + ag->g2h_off;

	lockdep_assert_held(&ag->lock);
	if (len > ag->g2h_size - CV_HDR_LEN)
		return -EMSGSIZE;
	cv_copy_to(mb, &h, CV_HDR_LEN);
	if (len)
		cv_copy_to(mb + CV_HDR_LEN, payload, len);
	cv_write(ag, CV_REG_G2H_DOORBELL, 1);
	return (int)cv_read(ag, CV_REG_G2H_RESULT);
}

static int cv_send_hello(struct cv_agent *ag)
{
	__le32 p[2] = { cpu_to_le32(CV_PROTOCOL_VERSION),
			cpu_to_le32(CV_AGENT_CAPS) };

	ag->hello_seq = ++ag->seq;
	return cv_send(ag, CV_OP_HELLO, ag->hello_seq, 0, p, sizeof(p));
}

/* ---- test_mode (TEST HOOK, see the top of this file) ---- */

/*
 * The bound agent, so that a write to test_mode can wake it: held requests
 * are answered as soon as the mode leaves 2. Set at the end of probe,
 * cleared first thing in remove (before the workqueue goes), under
 * cv_active_lock. One channel per guest.
 */
static struct cv_agent *cv_active;
static DEFINE_MUTEX(cv_active_lock);

static int cv_test_mode_set(const char *val, const struct kernel_param *kp)
{
	int mode, ret;

	ret = kstrtoint(val, 0, &mode);
	if (ret)
		return ret;
	if (mode < CV_TEST_NORMAL || mode > CV_TEST_MAX_MODE)
		return -EINVAL;
	WRITE_ONCE(test_mode, mode);
	mutex_lock(&cv_active_lock);
	if (cv_active) {
		dev_info(cv_active->dev, "test_mode = %d\n", mode);
		queue_work(cv_active->wq, &cv_active->work);
	}
	mutex_unlock(&cv_active_lock);
	return 0;
}

static const struct kernel_param_ops cv_test_mode_ops = {
	.set = cv_test_mode_set,
	.get = param_get_int,
};
module_param_cb(test_mode, &cv_test_mode_ops, &test_mode, 0644);
MODULE_PARM_DESC(test_mode,
		 "TEST HOOK for cellvm's rollback tests: 0 normal, 1 NAK every apply/remove/shutdown with -EBUSY, 2 hold requests unanswered (answered late when the mode leaves 2)");

static const char *cv_op_name(u16 op)
{
	switch (op) {
	case CV_OP_APPLY_OVERLAY:
		return "APPLY_OVERLAY";
	case CV_OP_REMOVE_OVERLAY:
		return "REMOVE_OVERLAY";
	case CV_OP_PING:
		return "PING";
	case CV_OP_SHUTDOWN:
		return "SHUTDOWN";
	case CV_OP_PCI_RESCAN:
		return "PCI_RESCAN";
	case CV_OP_PCI_REMOVE:
		return "PCI_REMOVE";
	default:
		return "other";
	}
}

/* test_mode 1: answers an APPLY/REMOVE with NAK -EBUSY; true if it did. */
static bool cv_test_refuse(struct cv_agent *ag, u16 op, u32 seq)
{
	if (READ_ONCE(test_mode) != CV_TEST_NAK)
		return false;
	dev_info(ag->dev, "test_mode nak: refusing %s seq %u with -EBUSY\n",
		 cv_op_name(op), seq);
	cv_send(ag, CV_OP_NAK, seq, -EBUSY, NULL, 0);
	return true;
}

/*
 * test_mode 2: keeps a copy of a host request (header + @len payload bytes
 * at @msg) to answer later; true if the request was taken (held or dropped).
 */
static bool cv_test_hold(struct cv_agent *ag, const u8 *msg, u32 len)
{
	const struct cv_hdr *h = (const struct cv_hdr *)msg;
	u16 op = le16_to_cpu(h->op);
	u32 seq = le32_to_cpu(h->seq);
	struct cv_held *m;

	if (READ_ONCE(test_mode) != CV_TEST_SILENT ||
	    (op != CV_OP_APPLY_OVERLAY && op != CV_OP_REMOVE_OVERLAY &&
	     op != CV_OP_PING && op != CV_OP_SHUTDOWN))
		return false;
	if (ag->n_held >= CV_TEST_MAX_HELD) {
		dev_warn(ag->dev, "test_mode silent: dropping %s seq %u (%u held)\n",
			 cv_op_name(op), seq, ag->n_held);
		return true;
	}
	m = kvmalloc(struct_size(m, msg, CV_HDR_LEN + len), GFP_KERNEL);
	if (!m)
		return true; /* dropped; the allocator already said why */
	m->size = CV_HDR_LEN + len;
	memcpy(m->msg, msg, m->size);
	list_add_tail(&m->list, &ag->held);
	ag->n_held++;
	dev_info(ag->dev, "test_mode silent: holding %s seq %u unanswered\n",
		 cv_op_name(op), seq);
	return true;
}

static void cv_free_held(struct cv_agent *ag)
{
	struct cv_held *m, *tmp;

	list_for_each_entry_safe(m, tmp, &ag->held, list) {
		list_del(&m->list);
		kvfree(m);
	}
	ag->n_held = 0;
}

/* ---- overlays ---- */

static void cv_free_nodes(struct list_head *nodes)
{
	struct cv_node *n, *tmp;

	list_for_each_entry_safe(n, tmp, nodes, list) {
		list_del(&n->list);
		kfree(n->path);
		kfree(n);
	}
}

static void cv_free_overlay(struct cv_overlay *ov)
{
	cv_free_nodes(&ov->nodes);
	cv_free_nodes(&ov->enabled);
	kfree(ov);
}

/* ---- consent (see CONSENT at the top) ---- */

static char *consent_hook = "/sbin/cellvm-consent";
module_param(consent_hook, charp, 0644);
MODULE_PARM_DESC(consent_hook,
		 "program asked before a device leaves the guest: HOOK disable|remove NODE-PATH; exit 0 lets it go, anything else refuses the request (EBUSY); no such program = consent; empty = never ask");

static int cv_add_node(struct list_head *list, const char *path)
{
	struct cv_node *n = kzalloc(sizeof(*n), GFP_KERNEL);

	if (!n)
		return -ENOMEM;
	n->path = kstrdup(path, GFP_KERNEL);
	if (!n->path) {
		kfree(n);
		return -ENOMEM;
	}
	list_add_tail(&n->list, list);
	return 0;
}

/*
 * False when the strings block of FDT @blob (len >= 8, checked) has no
 * "status" property name, so no fragment can set one: an attach's overlay
 * (new nodes only) then skips the unflatten below. True when unsure.
 */
static bool cv_fdt_names_status(const void *blob, u32 len)
{
	static const char want[] = "status";
	u32 off, size, i = 0;

	if (len < 40)
		return true;
	off = get_unaligned_be32(blob + 12); /* off_dt_strings */
	size = get_unaligned_be32(blob + 32); /* size_dt_strings */
	if (off > len || size > len - off)
		return true;
	while (i < size) {
		const char *s = (const char *)blob + off + i;
		size_t n = strnlen(s, size - i);

		if (n == sizeof(want) - 1 && !memcmp(s, want, n))
			return true;
		i += n + 1;
	}
	return false;
}

/*
 * The status changes of overlay @blob: the target-path of every fragment
 * whose __overlay__ sets "status", on @enabled when it is "okay" (or "ok"),
 * else on @disabled. Fragments that target a phandle are not looked at
 * (cellvm's status changes use target-path).
 */
static int cv_status_changes(const void *blob, u32 len,
			     struct list_head *disabled,
			     struct list_head *enabled)
{
	struct device_node *root = NULL, *frag;
	void *mem;
	int ret = 0;

	if (len < 8 || get_unaligned_be32(blob + 4) > len)
		return -EINVAL;
	if (!cv_fdt_names_status(blob, len))
		return 0;
	mem = of_fdt_unflatten_tree((const unsigned long *)blob, NULL, &root);
	if (!mem || !root) {
		kfree(mem);
		return -EINVAL;
	}
	for_each_child_of_node(root, frag) {
		struct device_node *ov = of_get_child_by_name(frag, "__overlay__");
		const char *target, *status;

		if (ov && !of_property_read_string(frag, "target-path", &target) &&
		    !of_property_read_string(ov, "status", &status)) {
			bool okay = !strcmp(status, "okay") || !strcmp(status, "ok");

			ret = cv_add_node(okay ? enabled : disabled, target);
		}
		of_node_put(ov);
		if (ret) {
			of_node_put(frag);
			break;
		}
	}
	kfree(mem);
	return ret;
}

static unsigned int consent_timeout_ms = 5000;
module_param(consent_timeout_ms, uint, 0644);
MODULE_PARM_DESC(consent_timeout_ms,
		 "how long the consent responder (/dev/cellvm-consent) has to answer before the request is refused");

/* ---- consent responder (see CONSENT RESPONDER at the top) ---- */

enum { CV_QUESTION_MAX = 512 };

/*
 * The one question in flight. Questions are asked one at a time (from the
 * ordered work item, under agent->lock); cv_resp_lock guards the rest.
 */
static struct {
	struct mutex lock;
	wait_queue_head_t asked; /* a question was posted or the agent stops */
	wait_queue_head_t answered; /* an answer came or the responder left */
	bool open; /* a responder holds the device */
	u64 seq; /* of the current question; 0 before the first */
	char question[CV_QUESTION_MAX];
	size_t len, pos; /* question length, bytes the responder read */
	bool pending; /* the current question awaits its answer */
	int answer; /* valid when !pending and answered_seq == seq */
	u64 answered_seq;
} cv_resp = {
	.lock = __MUTEX_INITIALIZER(cv_resp.lock),
	.asked = __WAIT_QUEUE_HEAD_INITIALIZER(cv_resp.asked),
	.answered = __WAIT_QUEUE_HEAD_INITIALIZER(cv_resp.answered),
};

static int cv_resp_open(struct inode *inode, struct file *f)
{
	int ret = 0;

	mutex_lock(&cv_resp.lock);
	if (cv_resp.open)
		ret = -EBUSY;
	else
		cv_resp.open = true;
	mutex_unlock(&cv_resp.lock);
	return ret ? ret : nonseekable_open(inode, f);
}

static int cv_resp_release(struct inode *inode, struct file *f)
{
	mutex_lock(&cv_resp.lock);
	cv_resp.open = false;
	mutex_unlock(&cv_resp.lock);
	wake_up_all(&cv_resp.answered);
	return 0;
}

/* True when the responder has question bytes to read. */
static bool cv_resp_readable(void)
{
	bool ret;

	mutex_lock(&cv_resp.lock);
	ret = cv_resp.pending && cv_resp.pos < cv_resp.len;
	mutex_unlock(&cv_resp.lock);
	return ret;
}

static ssize_t cv_resp_read(struct file *f, char __user *buf, size_t count,
			    loff_t *ppos)
{
	size_t n;
	int ret;

	for (;;) {
		mutex_lock(&cv_resp.lock);
		if (cv_resp.pending && cv_resp.pos < cv_resp.len)
			break;
		mutex_unlock(&cv_resp.lock);
		if (f->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(cv_resp.asked,
					       cv_resp_readable());
		if (ret)
			return ret;
	}
	n = min(count, cv_resp.len - cv_resp.pos);
	if (copy_to_user(buf, cv_resp.question + cv_resp.pos, n)) {
		mutex_unlock(&cv_resp.lock);
		return -EFAULT;
	}
	cv_resp.pos += n;
	mutex_unlock(&cv_resp.lock);
	return n;
}

/* The answer to the current question: a decimal status, 0 = consent. */
static ssize_t cv_resp_write(struct file *f, const char __user *buf,
			     size_t count, loff_t *ppos)
{
	char line[16];
	int status, ret;

	if (!count || count >= sizeof(line))
		return -EINVAL;
	if (copy_from_user(line, buf, count))
		return -EFAULT;
	line[count] = '\0';
	ret = kstrtoint(strim(line), 10, &status);
	if (ret)
		return ret;
	mutex_lock(&cv_resp.lock);
	if (!cv_resp.pending || cv_resp.pos < cv_resp.len) {
		mutex_unlock(&cv_resp.lock);
		return -EPROTO; /* no question read, nothing to answer */
	}
	cv_resp.pending = false;
	cv_resp.answer = status;
	cv_resp.answered_seq = cv_resp.seq;
	mutex_unlock(&cv_resp.lock);
	wake_up_all(&cv_resp.answered);
	return count;
}

static __poll_t cv_resp_poll(struct file *f, poll_table *wait)
{
	poll_wait(f, &cv_resp.asked, wait);
	return cv_resp_readable() ? EPOLLIN | EPOLLRDNORM : 0;
}

static const struct file_operations cv_resp_fops = {
	.owner = THIS_MODULE,
	.open = cv_resp_open,
	.release = cv_resp_release,
	.read = cv_resp_read,
	.write = cv_resp_write,
	.poll = cv_resp_poll,
};

static struct miscdevice cv_resp_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "cellvm-consent",
	.fops = &cv_resp_fops,
	.mode = 0600,
};

/* True once question @seq is answered or cannot be any more. */
static bool cv_resp_settled(u64 seq)
{
	bool ret;

	mutex_lock(&cv_resp.lock);
	ret = cv_resp.answered_seq == seq || !cv_resp.open;
	mutex_unlock(&cv_resp.lock);
	return ret;
}

/*
 * Asks the responder, if one holds the device open: 1 when there is none
 * (ask the hook), else 0 (consent) or -EBUSY (refused, no answer in time,
 * or the responder left without answering).
 */
static int cv_ask_responder(struct cv_agent *ag, const char *action,
			    const char *path)
{
	const char *why = NULL;
	int status = 0;
	u64 seq;

	mutex_lock(&cv_resp.lock);
	if (!cv_resp.open) {
		mutex_unlock(&cv_resp.lock);
		return 1;
	}
	cv_resp.len = scnprintf(cv_resp.question, sizeof(cv_resp.question),
				"%s %s\n", action, path);
	cv_resp.pos = 0;
	cv_resp.pending = true;
	seq = ++cv_resp.seq;
	mutex_unlock(&cv_resp.lock);
	wake_up_all(&cv_resp.asked);

	wait_event_timeout(cv_resp.answered, cv_resp_settled(seq),
			   msecs_to_jiffies(consent_timeout_ms));
	mutex_lock(&cv_resp.lock);
	if (cv_resp.answered_seq == seq) {
		status = cv_resp.answer;
	} else {
		why = cv_resp.open ? "did not answer in time" :
				     "closed the device without answering";
		cv_resp.pending = false;
	}
	mutex_unlock(&cv_resp.lock);
	if (why) {
		dev_info(ag->dev, "consent responder %s (%s %s): keeping it\n",
			 why, action, path);
		return -EBUSY;
	}
	if (status) {
		dev_info(ag->dev,
			 "consent responder refused to %s %s (status %d): keeping it\n",
			 action, path, status);
		return -EBUSY;
	}
	return 0;
}

/*
 * Asks whether @path may go (@action: disable|remove): the responder if one
 * is open, else the consent hook.
 */
static int cv_ask_consent(struct cv_agent *ag, const char *action,
			  const char *path)
{
	static char *envp[] = { "HOME=/", "PATH=/sbin:/bin:/usr/sbin:/usr/bin",
				NULL };
	char *argv[4];
	char *hook;
	int ret;

	ret = cv_ask_responder(ag, action, path);
	if (ret <= 0)
		return ret;
	kernel_param_lock(THIS_MODULE);
	hook = consent_hook ? kstrdup(consent_hook, GFP_KERNEL) : NULL;
	kernel_param_unlock(THIS_MODULE);
	if (!hook || !hook[0]) {
		kfree(hook);
		return 0;
	}
	argv[0] = hook;
	argv[1] = (char *)action;
	argv[2] = (char *)path;
	argv[3] = NULL;
	ret = call_usermodehelper(hook, argv, envp, UMH_WAIT_PROC);
	if (ret == -ENOENT) {
		ret = 0;
	} else if (ret) {
		dev_info(ag->dev,
			 "consent hook %s refused to %s %s (%s %d): keeping it\n",
			 hook, action, path, ret > 0 ? "exit status" : "error",
			 ret > 0 ? (ret >> 8) & 0xff : ret);
		ret = -EBUSY;
	}
	kfree(hook);
	return ret;
}

/* Asks for every node of @nodes; the first refusal wins. */
static int cv_consent_all(struct cv_agent *ag, const char *action,
			  struct list_head *nodes)
{
	ktime_t start = ktime_get();
	struct cv_node *n;
	int ret;

	list_for_each_entry(n, nodes, list) {
		ret = cv_ask_consent(ag, action, n->path);
		if (ret)
			return ret;
	}
	/* For profiles (initcall_debug's probe times beside it): log only. */
	if (!list_empty(nodes))
		dev_printk(KERN_DEBUG, ag->dev, "consent to %s took %lld us\n",
			   action, ktime_us_delta(ktime_get(), start));
	return 0;
}

/*
 * OF_OVERLAY_PRE_APPLY, called from of_overlay_fdt_apply() with of_mutex
 * held (so: no of_overlay_*() or of_platform_*() calls here). For our own
 * applies only (same task), records the path of every node a fragment adds
 * under its target, i.e. every child of __overlay__ the target does not
 * already have (those are merged, not created).
 */
static int cv_overlay_notify(struct notifier_block *nb, unsigned long action,
			     void *arg)
{
	struct cv_agent *ag = container_of(nb, struct cv_agent, nb);
	struct of_overlay_notify_data *nd = arg;
	struct device_node *child, *old;

	if (action != OF_OVERLAY_PRE_APPLY ||
	    READ_ONCE(ag->capture_task) != current || !nd->overlay ||
	    !nd->target)
		return NOTIFY_DONE;

	for_each_child_of_node(nd->overlay, child) {
		const char *name = kbasename(child->full_name);
		bool exists = false;
		struct cv_node *n;

		for_each_child_of_node(nd->target, old) {
			if (!strcmp(kbasename(old->full_name), name)) {
				exists = true;
				of_node_put(old);
				break;
			}
		}
		if (exists)
			continue;
		n = kzalloc(sizeof(*n), GFP_KERNEL);
		if (n) {
			if (of_node_is_root(nd->target))
				n->path = kasprintf(GFP_KERNEL, "/%s", name);
			else
				n->path = kasprintf(GFP_KERNEL, "%pOF/%s",
						    nd->target, name);
		}
		if (!n || !n->path) {
			kfree(n);
			of_node_put(child);
			/* Refuse the apply: its devices could not be tracked. */
			return notifier_from_errno(-ENOMEM);
		}
		list_add_tail(&n->list, ag->capture_list);
	}
	return NOTIFY_OK;
}

/*
 * Removes an overlay we applied: first destroys the platform devices of the
 * nodes it created (of_overlay_remove() reverts properties before the
 * devices go, which breaks drivers such as virtio-mmio), then the overlay.
 * Not from an OF_OVERLAY_PRE_REMOVE notifier: that runs under of_mutex and
 * device teardown there hangs. On success frees @ov.
 */
static int cv_remove_overlay(struct cv_agent *ag, struct cv_overlay *ov)
{
	struct cv_node *n;
	int ret;

	list_for_each_entry_reverse(n, &ov->nodes, list) {
		struct device_node *np = of_find_node_by_path(n->path);
		struct platform_device *pdev;

		if (!np)
			continue;
		pdev = of_find_device_by_node(np);
		if (pdev) {
			dev_dbg(ag->dev, "overlay %d: destroying %s\n", ov->id,
				dev_name(&pdev->dev));
			of_platform_device_destroy(&pdev->dev, NULL);
			put_device(&pdev->dev);
		}
		of_node_put(np);
	}
	ret = of_overlay_remove(&ov->id);
	if (ret)
		return ret;
	list_del(&ov->list);
	cv_free_overlay(ov);
	return 0;
}

/*
 * Populates every add-on connector (compatible "cellvm,connector", a
 * simple-bus) that overlay @ov added. Linux populates simple-buses at boot
 * only: without this, the nodes a later overlay (an add-on board) adds
 * under a connector attached at run time would get no devices, because the
 * platform notifier only creates devices under a populated bus. Removal
 * needs nothing: of_platform_device_destroy() tears a populated bus down
 * with its children. Returns the first error (the caller then undoes the
 * whole overlay and NAKs it).
 */
static int cv_populate_connectors(struct cv_agent *ag, struct cv_overlay *ov)
{
	struct cv_node *n;
	int err = 0;

	list_for_each_entry(n, &ov->nodes, list) {
		struct device_node *np = of_find_node_by_path(n->path);
		struct platform_device *pdev;
		int ret;

		if (!np)
			continue;
		if (of_device_is_compatible(np, "cellvm,connector") &&
		    !of_node_check_flag(np, OF_POPULATED_BUS)) {
			pdev = of_find_device_by_node(np);
			ret = of_platform_populate(np, NULL, NULL,
						   pdev ? &pdev->dev : NULL);
			if (ret) {
				dev_warn(ag->dev, "populating connector %pOF: %d\n",
					 np, ret);
				if (!err)
					err = ret;
			} else {
				dev_info(ag->dev, "connector %pOF ready\n", np);
			}
			if (pdev)
				put_device(&pdev->dev);
		}
		of_node_put(np);
	}
	return err;
}

/*
 * Applies @blob; on success *@id is the overlay changeset id. The nodes on
 * @enabled (the ones it sets "okay") move to the overlay, either way.
 */
static int cv_apply_overlay(struct cv_agent *ag, const void *blob, u32 len,
			    int *id, struct list_head *enabled)
{
	struct cv_overlay *ov;
	int ret, rm;

	ov = kzalloc(sizeof(*ov), GFP_KERNEL);
	if (!ov) {
		cv_free_nodes(enabled);
		return -ENOMEM;
	}
	INIT_LIST_HEAD(&ov->nodes);
	INIT_LIST_HEAD(&ov->enabled);
	INIT_LIST_HEAD(&ov->list);
	list_splice_init(enabled, &ov->enabled);

	WRITE_ONCE(ag->capture_list, &ov->nodes);
	WRITE_ONCE(ag->capture_task, current);
	ret = of_overlay_fdt_apply(blob, len, &ov->id, NULL);
	WRITE_ONCE(ag->capture_task, NULL);

	if (ret) {
		/* A failed apply may still have an id that must be removed. */
		if (ov->id) {
			list_add_tail(&ov->list, &ag->overlays);
			rm = cv_remove_overlay(ag, ov);
			if (rm)
				dev_err(ag->dev,
					"failed apply left overlay %d that cannot be removed: %d\n",
					ov->id, rm);
		} else {
			cv_free_overlay(ov);
		}
		return ret;
	}
	list_add_tail(&ov->list, &ag->overlays);
	/* A connector that cannot be populated is no connector: undo all. */
	ret = cv_populate_connectors(ag, ov);
	if (ret) {
		rm = cv_remove_overlay(ag, ov);
		if (rm)
			dev_err(ag->dev,
				"overlay %d with an unusable connector cannot be removed: %d\n",
				ov->id, rm);
		return ret;
	}
	*id = ov->id;
	return 0;
}

static struct cv_overlay *cv_find_overlay(struct cv_agent *ag, int id)
{
	struct cv_overlay *ov;

	list_for_each_entry(ov, &ag->overlays, list)
		if (ov->id == id)
			return ov;
	return NULL;
}

/* ---- host messages ---- */

static void cv_handle_apply(struct cv_agent *ag, u32 seq, const void *p,
			    u32 len)
{
	struct cv_overlay *ov;
	LIST_HEAD(disabled);
	LIST_HEAD(enabled);
	ktime_t start = ktime_get();
	__le32 ack[3];
	int id = 0, ret;

	/* A status change that takes a device away needs consent first. */
	ret = cv_status_changes(p, len, &disabled, &enabled);
	if (!ret)
		ret = cv_consent_all(ag, "disable", &disabled);
	cv_free_nodes(&disabled);
	if (ret) {
		cv_free_nodes(&enabled);
		cv_send(ag, CV_OP_NAK, seq, ret, NULL, 0);
		return;
	}
	ret = cv_apply_overlay(ag, p, len, &id, &enabled);
	if (ret) {
		dev_warn(ag->dev, "overlay apply (%u bytes) failed: %d\n", len,
			 ret);
		cv_send(ag, CV_OP_NAK, seq, ret, NULL, 0);
		return;
	}
	/*
	 * The overlay id, the apply's duration and the time from the interrupt
	 * to this worker running (U32_MAX: unknown), in microseconds.
	 */
	ack[0] = cpu_to_le32((u32)id);
	ack[1] = cpu_to_le32((u32)min_t(s64, ktime_us_delta(ktime_get(), start),
					U32_MAX - 1));
	ack[2] = cpu_to_le32(ag->wake_us < 0 ? U32_MAX :
			     (u32)min_t(s64, ag->wake_us, U32_MAX - 1));
	ret = cv_send(ag, CV_OP_ACK, seq, 0, ack, sizeof(ack));
	if (ret) {
		/*
		 * The host refused the ACK (e.g. -ETIMEDOUT: it gave up on the
		 * request): nobody owns this overlay, undo it.
		 */
		dev_warn(ag->dev,
			 "host refused ACK of overlay %d (%d): removing it\n", id,
			 ret);
		ov = cv_find_overlay(ag, id);
		if (ov && cv_remove_overlay(ag, ov))
			dev_err(ag->dev, "cannot remove orphaned overlay %d\n",
				id);
		return;
	}
	dev_info(ag->dev, "applied overlay %d (%u bytes)\n", id, len);
}

static void cv_handle_remove(struct cv_agent *ag, u32 seq, const void *p,
			     u32 len)
{
	struct cv_overlay *ov;
	u32 id;
	int ret;

	if (len < 4) {
		cv_send(ag, CV_OP_NAK, seq, -EINVAL, NULL, 0);
		return;
	}
	id = get_unaligned_le32(p);
	ov = id <= INT_MAX ? cv_find_overlay(ag, (int)id) : NULL;
	if (!ov) {
		cv_send(ag, CV_OP_NAK, seq, -ENOENT, NULL, 0);
		return;
	}
	/* The nodes it enabled go back to their boot state: ask first. */
	ret = cv_consent_all(ag, "remove", &ov->enabled);
	if (ret) {
		cv_send(ag, CV_OP_NAK, seq, ret, NULL, 0);
		return;
	}
	ret = cv_remove_overlay(ag, ov);
	if (ret) {
		dev_warn(ag->dev, "removing overlay %u failed: %d\n", id, ret);
		cv_send(ag, CV_OP_NAK, seq, ret, NULL, 0);
		return;
	}
	dev_info(ag->dev, "removed overlay %u\n", id);
	ret = cv_send(ag, CV_OP_ACK, seq, 0, NULL, 0);
	if (ret)
		dev_warn(ag->dev, "host refused ACK of removal %u: %d\n", id,
			 ret);
}

static void cv_handle_ping(struct cv_agent *ag, u32 seq)
{
	u32 max = (ag->g2h_size - CV_HDR_LEN) / 4 - 1, n = 0, count = 0;
	struct cv_overlay *ov;
	__le32 *p;

	p = kmalloc(ag->g2h_size - CV_HDR_LEN, GFP_KERNEL);
	if (!p) {
		cv_send(ag, CV_OP_NAK, seq, -ENOMEM, NULL, 0);
		return;
	}
	list_for_each_entry(ov, &ag->overlays, list) {
		if (n < max)
			p[1 + n++] = cpu_to_le32((u32)ov->id);
		count++;
	}
	p[0] = cpu_to_le32(count);
	cv_send(ag, CV_OP_STATUS, seq, 0, p, 4 * (n + 1));
	kfree(p);
}

/* PCI_RESCAN / PCI_REMOVE payload: u32 domain, u32 bus, u32 devfn. */
struct cv_pci_target {
	int domain;
	u32 bus;
	u32 devfn;
};

static int cv_pci_target(const void *p, u32 len, struct cv_pci_target *t)
{
	if (len < 12)
		return -EINVAL;
	/* The domain as this kernel numbers the bridge: on x86 the low 32 bits
	 * of the ECAM base, on arm64 the linux,pci-domain cellvm gave it. */
	t->domain = (int)get_unaligned_le32(p);
	t->bus = get_unaligned_le32(p + 4);
	t->devfn = get_unaligned_le32(p + 8);
	return t->bus > 0xff || t->devfn > 0xff ? -EINVAL : 0;
}

/* Rescans the target's bus; ACK once the function is there. */
static void cv_handle_pci_rescan(struct cv_agent *ag, u32 seq, const void *p,
				 u32 len)
{
	struct cv_pci_target t;
	struct pci_bus *bus;
	struct pci_dev *dev = NULL;
	int ret = cv_pci_target(p, len, &t);

	if (!ret) {
		pci_lock_rescan_remove();
		bus = pci_find_bus(t.domain, t.bus);
		if (bus) {
			pci_rescan_bus(bus);
			dev = pci_get_slot(bus, t.devfn);
		}
		pci_unlock_rescan_remove();
		ret = dev ? 0 : -ENODEV;
		pci_dev_put(dev);
	}
	if (ret) {
		dev_warn(ag->dev, "PCI rescan for %04x:%02x:%02x.%u: %d\n",
			 (u32)t.domain, t.bus, t.devfn >> 3, t.devfn & 7, ret);
		cv_send(ag, CV_OP_NAK, seq, ret, NULL, 0);
		return;
	}
	dev_info(ag->dev, "PCI function %04x:%02x:%02x.%u added\n",
		 (u32)t.domain, t.bus, t.devfn >> 3, t.devfn & 7);
	cv_send(ag, CV_OP_ACK, seq, 0, NULL, 0);
}

/* Removes the target function after the consent hook let it go. */
static void cv_handle_pci_remove(struct cv_agent *ag, u32 seq, const void *p,
				 u32 len)
{
	struct cv_pci_target t;
	struct pci_dev *dev;
	char name[48];
	int ret = cv_pci_target(p, len, &t);

	if (ret) {
		cv_send(ag, CV_OP_NAK, seq, ret, NULL, 0);
		return;
	}
	dev = pci_get_domain_bus_and_slot(t.domain, t.bus, t.devfn);
	if (!dev) {
		cv_send(ag, CV_OP_NAK, seq, -ENOENT, NULL, 0);
		return;
	}
	snprintf(name, sizeof(name), "pci:%s", pci_name(dev));
	ret = cv_ask_consent(ag, "remove", name);
	if (ret) {
		pci_dev_put(dev);
		cv_send(ag, CV_OP_NAK, seq, ret, NULL, 0);
		return;
	}
	pci_stop_and_remove_bus_device_locked(dev);
	pci_dev_put(dev);
	dev_info(ag->dev, "PCI function %s removed\n", name + 4);
	cv_send(ag, CV_OP_ACK, seq, 0, NULL, 0);
}

/*
 * SHUTDOWN: acknowledge, then power off in an orderly way (the kernel runs
 * its poweroff_cmd, falling back to a forced poweroff if that cannot run).
 * If the host refused the ACK (it gave up on the request, e.g. a late
 * answer from test_mode 2), the guest keeps running.
 */
static void cv_handle_shutdown(struct cv_agent *ag, u32 seq)
{
	int ret = cv_send(ag, CV_OP_ACK, seq, 0, NULL, 0);

	if (ret) {
		dev_warn(ag->dev,
			 "host refused our ACK of SHUTDOWN seq %u (%d): not powering off\n",
			 seq, ret);
		return;
	}
	dev_info(ag->dev, "host asked for shutdown: orderly poweroff\n");
	orderly_poweroff(true);
}

/*
 * The kernel's last step of a poweroff (other CPUs are stopped, interrupts
 * are off): tell the host. No lock can be taken here; nothing else sends
 * any more, so the mailbox is written directly.
 */
static int cv_power_off(struct sys_off_data *data)
{
	struct cv_agent *ag = data->cb_data;
	struct cv_hdr h = {
		.magic = cpu_to_le32(CV_MSG_MAGIC),
		.version = cpu_to_le16(CV_PROTOCOL_VERSION),
		.op = cpu_to_le16(CV_OP_POWER_OFF),
		.seq = cpu_to_le32(ag->seq + 1),
	};

	cv_copy_to(ag->base + ag->g2h_off, &h, CV_HDR_LEN);
	cv_write(ag, CV_REG_G2H_DOORBELL, 1);
	return NOTIFY_DONE;
}

static void cv_handle(struct cv_agent *ag, const struct cv_hdr *h,
		      const u8 *payload, u32 len)
{
	u32 seq = le32_to_cpu(h->seq);
	u16 op = le16_to_cpu(h->op);
	int status = (int)le32_to_cpu(h->status);

	switch (op) {
	case CV_OP_APPLY_OVERLAY:
		if (!cv_test_refuse(ag, op, seq))
			cv_handle_apply(ag, seq, payload, len);
		break;
	case CV_OP_REMOVE_OVERLAY:
		if (!cv_test_refuse(ag, op, seq))
			cv_handle_remove(ag, seq, payload, len);
		break;
	case CV_OP_PING:
		cv_handle_ping(ag, seq);
		break;
	case CV_OP_SHUTDOWN:
		if (!cv_test_refuse(ag, op, seq))
			cv_handle_shutdown(ag, seq);
		break;
	case CV_OP_PCI_RESCAN:
		if (!cv_test_refuse(ag, op, seq))
			cv_handle_pci_rescan(ag, seq, payload, len);
		break;
	case CV_OP_PCI_REMOVE:
		if (!cv_test_refuse(ag, op, seq))
			cv_handle_pci_remove(ag, seq, payload, len);
		break;
	case CV_OP_ACK:
		if (seq == ag->hello_seq && len >= 8)
			dev_info(ag->dev,
				 "host accepted HELLO (host protocol %u, capabilities %#x)\n",
				 get_unaligned_le32(payload),
				 get_unaligned_le32(payload + 4));
		break;
	case CV_OP_NAK:
		/* Replies are never answered. */
		dev_warn_ratelimited(ag->dev,
				     "host refused our message seq %u (op %u): %d\n",
				     seq, len >= 4 ? get_unaligned_le32(payload) : 0,
				     status);
		break;
	default:
		dev_warn_ratelimited(ag->dev, "unknown host operation %u\n", op);
		cv_send(ag, CV_OP_NAK, seq, -EOPNOTSUPP, NULL, 0);
		break;
	}
}

/*
 * test_mode left 2: carries out the held requests in order, late (the host
 * gave up on them long ago). Caller holds ag->lock.
 */
static void cv_answer_held(struct cv_agent *ag)
{
	struct cv_held *m;

	while (!ag->stopping && READ_ONCE(test_mode) != CV_TEST_SILENT &&
	       (m = list_first_entry_or_null(&ag->held, struct cv_held, list))) {
		const struct cv_hdr *h = (const struct cv_hdr *)m->msg;

		list_del(&m->list);
		ag->n_held--;
		dev_info(ag->dev, "test_mode: answering held %s seq %u late\n",
			 cv_op_name(le16_to_cpu(h->op)), le32_to_cpu(h->seq));
		cv_handle(ag, h, m->msg + CV_HDR_LEN, m->size - CV_HDR_LEN);
		kvfree(m);
	}
}

/*
 * Takes every posted host message: copy it out, release the mailbox with
 * its ticket, and only then act on it (a result other than 0 means the host
 * retracted it while we copied: discard the copy).
 */
static void cv_work(struct work_struct *work)
{
	struct cv_agent *ag = container_of(work, struct cv_agent, work);
	const struct cv_hdr *h = (const struct cv_hdr *)ag->rx;
	void __iomem *mb = ag->base + ag->h2g_off;
	s64 irq = xchg(&ag->irq_ns, 0);

	mutex_lock(&ag->lock);
	ag->wake_us = irq ? div_s64(ktime_get_ns() - irq, 1000) : -1;
	cv_answer_held(ag);
	while (!ag->stopping && cv_read(ag, CV_REG_H2G_STATE) == 1) {
		u32 ticket = cv_read(ag, CV_REG_H2G_TICKET), len;
		bool ok;

		cv_copy_from(ag->rx, mb, CV_HDR_LEN);
		len = le32_to_cpu(h->len);
		ok = le32_to_cpu(h->magic) == CV_MSG_MAGIC &&
		     le16_to_cpu(h->version) == CV_PROTOCOL_VERSION &&
		     len <= ag->h2g_size - CV_HDR_LEN;
		if (ok)
			cv_copy_from(ag->rx + CV_HDR_LEN, mb + CV_HDR_LEN, len);
		cv_write(ag, CV_REG_H2G_DONE, ticket);
		if (cv_read(ag, CV_REG_H2G_RESULT) != 0)
			continue;
		if (!ok) {
			dev_warn_ratelimited(ag->dev,
					     "malformed host message dropped (magic %#x, version %u, len %u)\n",
					     le32_to_cpu(h->magic),
					     le16_to_cpu(h->version), len);
			continue;
		}
		if (cv_test_hold(ag, ag->rx, len))
			continue;
		cv_handle(ag, h, ag->rx + CV_HDR_LEN, len);
	}
	mutex_unlock(&ag->lock);
}

static irqreturn_t cv_irq(int irq, void *data)
{
	struct cv_agent *ag = data;
	u32 status = cv_read(ag, CV_REG_INT_STATUS) & CV_INT_H2G;

	if (!status)
		return IRQ_NONE; /* shared line: not ours */
	cv_write(ag, CV_REG_INT_ACK, status);
	if (!READ_ONCE(ag->irq_ns))
		WRITE_ONCE(ag->irq_ns, ktime_get_ns() ?: 1);
	queue_work(ag->wq, &ag->work);
	return IRQ_HANDLED;
}

/* ---- driver ---- */

static int cv_probe(struct platform_device *pdev)
{
	struct device *dev = &pdev->dev;
	struct resource *res;
	struct cv_agent *ag;
	u32 magic, version;
	int ret;

	ag = devm_kzalloc(dev, sizeof(*ag), GFP_KERNEL);
	if (!ag)
		return -ENOMEM;
	ag->dev = dev;
	mutex_init(&ag->lock);
	INIT_LIST_HEAD(&ag->overlays);
	INIT_LIST_HEAD(&ag->held);
	INIT_WORK(&ag->work, cv_work);

	ag->base = devm_platform_get_and_ioremap_resource(pdev, 0, &res);
	if (IS_ERR(ag->base))
		return PTR_ERR(ag->base);
	magic = cv_read(ag, CV_REG_MAGIC);
	version = cv_read(ag, CV_REG_VERSION);
	if (magic != CV_DEVICE_MAGIC || version < 1) {
		dev_err(dev, "no cellvm channel at %pR (magic %#x, version %u)\n",
			res, magic, version);
		return -ENODEV;
	}
	ag->h2g_off = cv_read(ag, CV_REG_H2G_OFFSET);
	ag->h2g_size = cv_read(ag, CV_REG_H2G_SIZE);
	ag->g2h_off = cv_read(ag, CV_REG_G2H_OFFSET);
	ag->g2h_size = cv_read(ag, CV_REG_G2H_SIZE);
	if (ag->h2g_size < CV_HDR_LEN + 8 || ag->g2h_size < CV_HDR_LEN + 8 ||
	    (ag->h2g_off | ag->g2h_off) % 8 ||
	    (u64)ag->h2g_off + ag->h2g_size > resource_size(res) ||
	    (u64)ag->g2h_off + ag->g2h_size > resource_size(res)) {
		dev_err(dev, "bad mailbox layout h2g %#x+%#x g2h %#x+%#x\n",
			ag->h2g_off, ag->h2g_size, ag->g2h_off, ag->g2h_size);
		return -ENODEV;
	}
	ag->irq = platform_get_irq(pdev, 0);
	if (ag->irq < 0)
		return ag->irq;

	ag->rx = kvmalloc(ag->h2g_size, GFP_KERNEL);
	if (!ag->rx)
		return -ENOMEM;
	/*
	 * High priority: the host waits for every answer, and a busy guest
	 * (a shell forking in a loop) must not keep the worker off the CPU.
	 */
	ag->wq = alloc_ordered_workqueue("cellvm_agent", WQ_HIGHPRI);
	if (!ag->wq) {
		ret = -ENOMEM;
		goto err_rx;
	}
	ag->nb.notifier_call = cv_overlay_notify;
	ret = of_overlay_notifier_register(&ag->nb);
	if (ret)
		goto err_wq;

	/* Clean start: a previous instance may have left state behind. */
	cv_write(ag, CV_REG_INT_ENABLE, 0);
	cv_write(ag, CV_REG_INT_ACK, ~0u);
	ret = request_irq(ag->irq, cv_irq, IRQF_SHARED, "cellvm_agent", ag);
	if (ret)
		goto err_nb;
	cv_write(ag, CV_REG_INT_ENABLE, CV_INT_H2G);
	platform_set_drvdata(pdev, ag);

	mutex_lock(&ag->lock);
	ret = cv_send_hello(ag);
	mutex_unlock(&ag->lock);
	if (ret) {
		dev_err(dev, "host refused HELLO: %d\n", ret);
		goto err_irq;
	}
	if (cv_read(ag, CV_REG_HOST_CAPS) & CV_HOST_CAP_POWER_OFF) {
		ag->sys_off = register_sys_off_handler(SYS_OFF_MODE_POWER_OFF,
						       SYS_OFF_PRIO_DEFAULT,
						       cv_power_off, ag);
		if (IS_ERR(ag->sys_off)) {
			dev_warn(dev, "cannot register the power-off handler: %ld\n",
				 PTR_ERR(ag->sys_off));
			ag->sys_off = NULL;
		}
	}
	/* In case the host posted before the interrupt was enabled. */
	queue_work(ag->wq, &ag->work);
	mutex_lock(&cv_active_lock);
	cv_active = ag;
	/* One channel per guest: the first one serves the responder. */
	if (!cv_resp_dev.this_device) {
		ret = misc_register(&cv_resp_dev);
		if (ret) {
			dev_warn(dev, "no /dev/cellvm-consent (%d): the consent hook answers\n",
				 ret);
			cv_resp_dev.this_device = NULL;
		}
	}
	mutex_unlock(&cv_active_lock);
	dev_info(dev,
		 "cellvm channel at %pR irq %d, host protocol %u: HELLO sent (protocol %u, capabilities %#x)\n",
		 res, ag->irq, version, CV_PROTOCOL_VERSION, CV_AGENT_CAPS);
	return 0;

err_irq:
	cv_write(ag, CV_REG_INT_ENABLE, 0);
	free_irq(ag->irq, ag);
err_nb:
	of_overlay_notifier_unregister(&ag->nb);
err_wq:
	destroy_workqueue(ag->wq);
err_rx:
	kvfree(ag->rx);
	return ret;
}

static void cv_remove(struct platform_device *pdev)
{
	struct cv_agent *ag = platform_get_drvdata(pdev);
	struct cv_overlay *ov, *tmp;
	int ret;

	mutex_lock(&cv_active_lock);
	if (cv_active == ag) {
		cv_active = NULL;
		if (cv_resp_dev.this_device) {
			misc_deregister(&cv_resp_dev);
			cv_resp_dev.this_device = NULL;
		}
	}
	mutex_unlock(&cv_active_lock);
	if (ag->sys_off)
		unregister_sys_off_handler(ag->sys_off);
	cv_write(ag, CV_REG_INT_ENABLE, 0);
	free_irq(ag->irq, ag);
	mutex_lock(&ag->lock);
	ag->stopping = true;
	mutex_unlock(&ag->lock);
	destroy_workqueue(ag->wq); /* waits for a running cv_work */

	mutex_lock(&ag->lock);
	if (ag->n_held)
		dev_info(ag->dev, "unload: dropping %u held request(s) unanswered\n",
			 ag->n_held);
	cv_free_held(ag);
	list_for_each_entry_safe_reverse(ov, tmp, &ag->overlays, list) {
		int id = ov->id;

		ret = cv_remove_overlay(ag, ov);
		if (ret)
			dev_err(ag->dev, "unload: cannot remove overlay %d: %d\n",
				id, ret);
		else
			dev_info(ag->dev, "unload: removed overlay %d\n", id);
	}
	ret = cv_send(ag, CV_OP_BYE, ++ag->seq, 0, NULL, 0);
	if (ret)
		dev_warn(ag->dev, "host refused BYE: %d\n", ret);
	mutex_unlock(&ag->lock);

	of_overlay_notifier_unregister(&ag->nb);
	kvfree(ag->rx);
}

static const struct of_device_id cv_of_match[] = {
	{ .compatible = "cellvm,channel-v1" },
	{}
};
MODULE_DEVICE_TABLE(of, cv_of_match);

static struct platform_driver cv_driver = {
	.probe = cv_probe,
	.remove = cv_remove,
	.driver = {
		.name = "cellvm_agent",
		.of_match_table = cv_of_match,
	},
};
module_platform_driver(cv_driver);

MODULE_DESCRIPTION("cellvm channel agent: applies device-tree overlays sent by the host");
MODULE_AUTHOR("cellvm");
MODULE_LICENSE("GPL");
