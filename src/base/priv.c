/*
 * priv.c — dropping root after the privileged start-up (binding ports,
 * reading keys): the user "NAME[:GROUP]" is looked up, root is refused as
 * a target, and the drop is checked (setuid(0) must fail afterwards).
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"

int base_user_lookup(const char *spec, uid_t *uid, gid_t *gid, struct base_err *err)
{
	char ubuf[128], *group;
	if (strlen(spec) >= sizeof ubuf) return base_errf(err, "user name '%.32s...' too long", spec);
	snprintf(ubuf, sizeof ubuf, "%s", spec);
	if ((group = strchr(ubuf, ':'))) *group++ = 0;
	struct passwd *pw = getpwnam(ubuf);
	if (!pw) return base_errf(err, "unknown user '%s'", ubuf);
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	if (group && *group) {
		struct group *gr = getgrnam(group);
		if (!gr) return base_errf(err, "unknown group '%s'", group);
		*gid = gr->gr_gid;
	}
	if (*uid == 0)
		return base_errf(err, "refusing to run as root: name an unprivileged user, not '%s'",
		                 ubuf);
	return 0;
}

const char *base_default_user(void)
{
	return getpwnam("mailrep") ? "mailrep" : "nobody";
}

int base_drop_privileges(const char *spec, struct base_err *err)
{
	if (geteuid() != 0) return 0;
	uid_t uid;
	gid_t gid;
	if (base_user_lookup(spec, &uid, &gid, err) < 0) return -1;
	if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
		return base_errf(err, "cannot drop privileges to %s: %s", spec, strerror(errno));
	if (setuid(0) == 0) return base_errf(err, "privileges were not dropped");
	return 0;
}
