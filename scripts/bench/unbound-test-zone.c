/*
 * Preloaded into the bench's opendkim (LD_PRELOAD): every libunbound
 * context it creates resolves names under "test." like any other name.
 *
 * libunbound answers NXDOMAIN itself for the special-use names of RFC 6761,
 * "test." among them, so without this Debian's opendkim (built with
 * libunbound) never asks the bench DNS for b1._domainkey.news.bench.test.
 * Its own way to say so, ResolverConfiguration naming an unbound.conf with
 * 'local-zone: "test." nodefault', crashes it under concurrent mail
 * ("fatal flex scanner internal error"): it appears to create a context per
 * message (strace shows libunbound's two socketpairs for each), each parses
 * the file, and unbound's configuration parser is not reentrant.
 * ub_ctx_set_option parses no file. ("nodefault", which works in a file, is
 * ignored by ub_ctx_set_option; "transparent" replaces the default zone.)
 *
 *	gcc -shared -fPIC -O2 -o unbound-test-zone.so unbound-test-zone.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

struct ub_ctx;

static struct ub_ctx *(*real_create)(void);
static int (*set_option)(struct ub_ctx *, const char *, const char *);

__attribute__((constructor)) static void init(void)
{
	real_create = (struct ub_ctx * (*)(void)) dlsym(RTLD_NEXT, "ub_ctx_create");
	set_option = (int (*)(struct ub_ctx *, const char *, const char *)) dlsym(RTLD_NEXT, "ub_ctx_set_option");
}

struct ub_ctx *ub_ctx_create(void)
{
	struct ub_ctx *ctx;

	if (real_create == NULL)
		return NULL;
	ctx = real_create();
	if (ctx != NULL && set_option != NULL)
		(void) set_option(ctx, "local-zone:", "test. transparent");
	return ctx;
}
