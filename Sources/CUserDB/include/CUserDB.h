// CUserDB: user and group lookups through NSS, for vmmd. A target of its own so that
// the statically linked worker, which never looks anyone up, does not link NSS.
#ifndef CUSERDB_H
#define CUSERDB_H

#include <sys/types.h>

/// getpwnam(3): the uid and primary gid of user `name`. Returns 0, or -ENOENT.
int csys_user_ids(const char *name, uid_t *uid, gid_t *gid);

/// getgrnam(3): the gid of group `name`. Returns 0, or -ENOENT.
int csys_group_id(const char *name, gid_t *gid);

#endif
