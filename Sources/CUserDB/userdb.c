// Implementation of include/CUserDB.h.
#include "CUserDB.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>

int csys_user_ids(const char *name, uid_t *uid, gid_t *gid)
{
    struct passwd *pw = getpwnam(name);

    if (!pw)
        return -ENOENT;
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

int csys_group_id(const char *name, gid_t *gid)
{
    struct group *gr = getgrnam(name);

    if (!gr)
        return -ENOENT;
    *gid = gr->gr_gid;
    return 0;
}
