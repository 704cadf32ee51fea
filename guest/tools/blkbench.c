// blkbench: block device read benchmark for the cellvm guest (not a test).
//
//   blkbench DEVICE [RANDOM_READS] [SEQ_BLOCK_KIB]
//
// Reads DEVICE with O_DIRECT (the guest page cache stays out of it):
//   1. sequentially from start to end in SEQ_BLOCK_KIB blocks (default 128),
//   2. RANDOM_READS (default 2000) 4 KiB reads at 4 KiB-aligned offsets from
//      a fixed-seed xorshift generator (the same offsets in every VMM),
// one request at a time (queue depth 1), timed with CLOCK_MONOTONIC, and
// prints one line:
//   BLKBENCH-RESULT bytes=B seq_ns=T reads=N rand_ns=T
// or "BLKBENCH-ERROR what errno=E" and exit status 1. The host computes the
// rates (scripts/bench-virtio-blk.sh, cellvm-bench blk).
//
// Freestanding: no libc (raw system calls), so it adds a few KiB to the
// initramfs instead of a static libc. Built by
// scripts/build-guest-initramfs.sh with gcc -nostdlib -static (x86_64), or
// aarch64-linux-gnu-gcc for the arm64 guest (--arch arm64).

typedef unsigned long u64;
typedef long i64;

#if defined(__x86_64__)
#define SYS_write 1
#define SYS_open 2
#define SYS_pread64 17
#define SYS_ioctl 16
#define SYS_clock_gettime 228
#define SYS_exit_group 231

#define O_DIRECT 040000
#elif defined(__aarch64__)
// The generic system call table: no open(2), openat(AT_FDCWD, ...) instead.
#define SYS_write 64
#define SYS_openat 56
#define SYS_pread64 67
#define SYS_ioctl 29
#define SYS_clock_gettime 113
#define SYS_exit_group 94
#define AT_FDCWD (-100)

#define O_DIRECT 0200000
#else
#error "blkbench: x86_64 or aarch64 only"
#endif

#define O_RDONLY 0
#define BLKGETSIZE64 0x80081272UL
#define CLOCK_MONOTONIC 1

#define MAX_BLOCK (1024 * 1024)

static unsigned char buf[MAX_BLOCK] __attribute__((aligned(4096)));

#if defined(__x86_64__)
static i64 sys3(i64 n, i64 a, i64 b, i64 c)
{
	i64 ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

static i64 sys4(i64 n, i64 a, i64 b, i64 c, i64 d)
{
	i64 ret;
	register i64 r10 __asm__("r10") = d;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}
#else
static i64 sys4(i64 n, i64 a, i64 b, i64 c, i64 d)
{
	register i64 x8 __asm__("x8") = n;
	register i64 x0 __asm__("x0") = a;
	register i64 x1 __asm__("x1") = b;
	register i64 x2 __asm__("x2") = c;
	register i64 x3 __asm__("x3") = d;
	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3)
			 : "memory");
	return x0;
}

static i64 sys3(i64 n, i64 a, i64 b, i64 c)
{
	return sys4(n, a, b, c, 0);
}
#endif

static u64 len(const char *s)
{
	u64 n = 0;
	while (s[n])
		n++;
	return n;
}

static void put(const char *s)
{
	sys3(SYS_write, 1, (i64)s, (i64)len(s));
}

static void put_u64(u64 v)
{
	char d[24];
	int i = 23;
	d[i] = 0;
	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(d + i);
}

static u64 parse_u64(const char *s, u64 dflt)
{
	u64 v = 0;
	if (!s || !*s)
		return dflt;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return dflt;
		v = v * 10 + (u64)(*s - '0');
	}
	return v;
}

static __attribute__((noreturn)) void quit(int code)
{
	for (;;)
		sys3(SYS_exit_group, code, 0, 0);
}

static __attribute__((noreturn)) void fail(const char *what, i64 err)
{
	put("BLKBENCH-ERROR ");
	put(what);
	put(" errno=");
	put_u64((u64)-err);
	put("\n");
	quit(1);
}

static u64 now_ns(void)
{
	struct {
		i64 sec, nsec;
	} ts;
	i64 r = sys3(SYS_clock_gettime, CLOCK_MONOTONIC, (i64)&ts, 0);
	if (r < 0)
		fail("clock_gettime", r);
	return (u64)ts.sec * 1000000000UL + (u64)ts.nsec;
}

static void read_at(int fd, u64 n, u64 off)
{
	i64 r = sys4(SYS_pread64, fd, (i64)buf, (i64)n, (i64)off);
	if (r < 0)
		fail("pread", r);
	if ((u64)r != n)
		fail("short-read", 0);
}

void cmain(i64 *sp)
{
	i64 argc = sp[0];
	char **argv = (char **)(sp + 1);
	if (argc < 2) {
		put("usage: blkbench DEVICE [RANDOM_READS] [SEQ_BLOCK_KIB]\n");
		quit(2);
	}
	u64 reads = parse_u64(argc > 2 ? argv[2] : 0, 2000);
	u64 block = parse_u64(argc > 3 ? argv[3] : 0, 128) * 1024;
	if (block == 0 || block > MAX_BLOCK)
		fail("block-size", 0);

#ifdef SYS_open
	i64 fd = sys3(SYS_open, (i64)argv[1], O_RDONLY | O_DIRECT, 0);
#else
	i64 fd = sys4(SYS_openat, AT_FDCWD, (i64)argv[1], O_RDONLY | O_DIRECT, 0);
#endif
	if (fd < 0)
		fail("open", fd);
	u64 size = 0;
	i64 r = sys3(SYS_ioctl, fd, (i64)BLKGETSIZE64, (i64)&size);
	if (r < 0)
		fail("BLKGETSIZE64", r);
	if (size < block || size < 4096)
		fail("device-too-small", 0);

	u64 t0 = now_ns();
	u64 bytes = 0;
	for (u64 off = 0; off + block <= size; off += block) {
		read_at((int)fd, block, off);
		bytes += block;
	}
	u64 seq_ns = now_ns() - t0;

	u64 pages = size / 4096;
	u64 x = 0x9e3779b97f4a7c15UL;
	t0 = now_ns();
	for (u64 i = 0; i < reads; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		read_at((int)fd, 4096, (x % pages) * 4096);
	}
	u64 rand_ns = now_ns() - t0;

	put("BLKBENCH-RESULT bytes=");
	put_u64(bytes);
	put(" seq_ns=");
	put_u64(seq_ns);
	put(" reads=");
	put_u64(reads);
	put(" rand_ns=");
	put_u64(rand_ns);
	put("\n");
	quit(0);
}

#if defined(__x86_64__)
__asm__(".globl _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call cmain\n"
	"	hlt\n");
#else
// The kernel starts a process with sp 16-byte aligned, argc at [sp].
__asm__(".globl _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	bl cmain\n"
	"	b .\n");
#endif
